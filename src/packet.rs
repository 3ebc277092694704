//! A DPDK mbuf as the packet buffer of the forwarding plane (`vrouter::PacketBuf`) and of the
//! vhost-user fast path (`vhost_user::PacketBuffer`).

use pmd_shim::Mbuf;
use vrouter::{BufError, PacketBuf};

/// One packet in one mbuf. Chained mbufs are seen through their first segment only; the
/// receive paths that could produce chains (jumbo frames) are configured not to.
#[repr(transparent)]
#[derive(Debug)]
pub struct Pkt(pub Mbuf);

impl Pkt {
    pub fn into_mbuf(self) -> Mbuf {
        self.0
    }
}

fn u16_len(n: usize) -> Option<u16> {
    u16::try_from(n).ok()
}

impl PacketBuf for Pkt {
    #[inline(always)]
    fn data(&self) -> &[u8] {
        self.0.data()
    }

    #[inline(always)]
    fn data_mut(&mut self) -> &mut [u8] {
        self.0.data_mut()
    }

    #[inline(always)]
    fn headroom(&self) -> usize {
        usize::from(self.0.headroom())
    }

    #[inline(always)]
    fn tailroom(&self) -> usize {
        usize::from(self.0.tailroom())
    }

    #[inline]
    fn prepend(&mut self, n: usize) -> Result<(), BufError> {
        let have = self.headroom();
        match u16_len(n) {
            Some(len) if n <= have => self
                .0
                .prepend(len)
                .map(|_| ())
                .map_err(|_| BufError::NoHeadroom { need: n, have }),
            _ => Err(BufError::NoHeadroom { need: n, have }),
        }
    }

    #[inline]
    fn adj(&mut self, n: usize) -> Result<(), BufError> {
        let have = self.0.data().len();
        match u16_len(n) {
            Some(len) if n <= have => self
                .0
                .adj(len)
                .map_err(|_| BufError::TooShort { need: n, have }),
            _ => Err(BufError::TooShort { need: n, have }),
        }
    }

    #[inline]
    fn trim(&mut self, n: usize) -> Result<(), BufError> {
        let have = self.0.data().len();
        match u16_len(n) {
            Some(len) if n <= have && self.0.is_contiguous() => self
                .0
                .trim(len)
                .map_err(|_| BufError::TooShort { need: n, have }),
            _ => Err(BufError::TooShort { need: n, have }),
        }
    }

    #[inline]
    fn append(&mut self, n: usize) -> Result<(), BufError> {
        let have = self.tailroom();
        match u16_len(n) {
            Some(len) if n <= have && self.0.is_contiguous() => self
                .0
                .append(len)
                .map(|_| ())
                .map_err(|_| BufError::NoTailroom { need: n, have }),
            _ => Err(BufError::NoTailroom { need: n, have }),
        }
    }
}

/// Guest frames are received into single segments: a frame larger than one mbuf's room is
/// dropped and counted by the virtqueue (the pools are sized for 1518-byte frames).
impl vhost_user::PacketBuffer for Pkt {
    #[inline]
    fn reset(&mut self) {
        self.0.reset();
    }

    #[inline]
    fn append(&mut self, len: usize) -> Option<&mut [u8]> {
        if !self.0.is_contiguous() || len > usize::from(self.0.tailroom()) {
            return None;
        }
        self.0.append(u16_len(len)?).ok()
    }

    #[inline(always)]
    fn len(&self) -> usize {
        self.0.pkt_len() as usize
    }

    #[inline]
    fn piece(&self, i: usize) -> Option<&[u8]> {
        if i == 0 {
            // The common case, without walking the chain.
            return Some(self.0.data());
        }
        self.0.segments().nth(i)
    }
}
