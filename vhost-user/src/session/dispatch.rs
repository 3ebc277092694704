//! Message dispatch: each decoded request to its handler, and the reply or REPLY_ACK it earns.
//!
//! Requests about the device as a whole (features, owner, status, MTU, config space) are
//! handled here; those that set up the memory table and the vrings go to `rings`.

use super::{Output, Session, OFFERED_PROTOCOL_FEATURES, PF_REPLY_ACK};
use crate::codec::{ConfigSpace, Header, Message, Request};

/// What a handler did with a request, for the REPLY_ACK.
pub(super) enum Outcome {
    /// Request handled; ack 0 if asked.
    Ok,
    /// Request refused; ack 1 if asked.
    Refused,
    /// The request produced its own reply.
    Replied,
}

impl Session {
    /// Handles a message and acks it as its handler's outcome says.
    pub(super) fn apply(&mut self, msg: Message, out: &mut Output) {
        let outcome = self.apply_inner(&msg, out);
        self.ack(&msg, outcome, out);
    }

    pub(super) fn ack(&self, msg: &Message, outcome: Outcome, out: &mut Output) {
        let code = match outcome {
            Outcome::Replied => return,
            Outcome::Ok => 0u64,
            Outcome::Refused => 1u64,
        };
        if msg.header.need_reply() && self.protocol & PF_REPLY_ACK != 0 {
            msg.header.reply(&code.to_le_bytes(), &mut out.reply);
        }
    }

    pub(super) fn refuse(&self, msg: &Message, why: &str) -> Outcome {
        tracing::warn!(dev = %self.cfg.name, req = msg.request.name(), "refused: {why}");
        Outcome::Refused
    }

    fn apply_inner(&mut self, msg: &Message, out: &mut Output) -> Outcome {
        let reply_u64 = |v: u64, out: &mut Output| {
            msg.header.reply(&v.to_le_bytes(), &mut out.reply);
            Outcome::Replied
        };
        match &msg.request {
            Request::GetFeatures => reply_u64(self.cfg.features, out),
            Request::SetFeatures(f) => {
                if f & !self.cfg.features != 0 {
                    return self.refuse(
                        msg,
                        &format!(
                            "features {f:#x} include bits not offered ({:#x})",
                            self.cfg.features
                        ),
                    );
                }
                self.features = *f;
                Outcome::Ok
            }
            Request::SetOwner => {
                self.owner = true;
                Outcome::Ok
            }
            Request::ResetOwner | Request::ResetDevice => {
                self.reset();
                Outcome::Ok
            }
            Request::SetMemTable(..) => self.set_mem_table(msg),
            Request::SetLogBase(area, fd) => self.set_log_base(msg, area, fd, out),
            Request::SetLogFd(fd) => match fd.try_clone() {
                Ok(fd) => {
                    self.log_fd = Some(fd);
                    Outcome::Ok
                }
                Err(e) => self.refuse(msg, &format!("cannot duplicate the log fd: {e}")),
            },
            Request::SetVringNum(s) => self.set_vring_num(msg, s),
            Request::SetVringAddr(a) => self.set_vring_addr(msg, a),
            Request::SetVringBase(s) => self.set_vring_base(msg, s),
            Request::GetVringBase(s) => self.get_vring_base(msg, s, out),
            Request::SetVringKick(_) | Request::SetVringCall(_) | Request::SetVringErr(_) => {
                self.set_vring_fd(msg)
            }
            Request::GetProtocolFeatures => reply_u64(OFFERED_PROTOCOL_FEATURES, out),
            Request::SetProtocolFeatures(f) => {
                if f & !OFFERED_PROTOCOL_FEATURES != 0 {
                    return self.refuse(
                        msg,
                        &format!("protocol features {f:#x} include bits not offered"),
                    );
                }
                self.protocol = *f;
                Outcome::Ok
            }
            Request::GetQueueNum => reply_u64(u64::from(self.cfg.max_queue_pairs), out),
            Request::SetVringEnable(s) => self.set_vring_enable(msg, s),
            Request::SendRarp(_) => Outcome::Ok,
            Request::NetSetMtu(m) => {
                if !(68..=65535).contains(m) {
                    return self.refuse(msg, &format!("MTU {m} outside 68..=65535"));
                }
                self.mtu = *m as u16;
                Outcome::Ok
            }
            Request::GetConfig(c) => {
                self.get_config(&msg.header, c, out);
                Outcome::Replied
            }
            Request::SetStatus(s) => {
                if *s == 0 {
                    self.reset();
                }
                self.status = *s;
                Outcome::Ok
            }
            Request::GetStatus => reply_u64(u64::from(self.status), out),
            Request::Unknown(c) => self.refuse(msg, &format!("unknown request code {c}")),
        }
    }

    fn get_config(&self, header: &Header, c: &ConfigSpace, out: &mut Output) {
        // struct virtio_net_config: mac[6], status u16, max_virtqueue_pairs u16, mtu u16.
        let mut space = [0u8; 12];
        space[..6].copy_from_slice(&self.cfg.mac);
        space[6..8].copy_from_slice(&1u16.to_le_bytes()); // VIRTIO_NET_S_LINK_UP
        space[8..10].copy_from_slice(&self.cfg.max_queue_pairs.to_le_bytes());
        space[10..12].copy_from_slice(&self.mtu.to_le_bytes());
        let (off, size) = (c.offset as usize, c.size as usize);
        let mut p = Vec::with_capacity(12 + size);
        p.extend_from_slice(&c.offset.to_le_bytes());
        match off.checked_add(size) {
            Some(end) if size <= 256 && end <= 256 => {
                p.extend_from_slice(&c.size.to_le_bytes());
                p.extend_from_slice(&c.flags.to_le_bytes());
                p.extend((off..end).map(|i| space.get(i).copied().unwrap_or(0)));
            }
            _ => {
                // Failure is a reply with an empty config payload.
                tracing::warn!(dev = %self.cfg.name, offset = c.offset, size = c.size, "GET_CONFIG outside the config space");
                p.extend_from_slice(&0u32.to_le_bytes());
                p.extend_from_slice(&c.flags.to_le_bytes());
            }
        }
        header.reply(&p, &mut out.reply);
    }
}
