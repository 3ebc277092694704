//! Memory and vring set-up: the memory table, each vring's size, addresses, base, fds and
//! enable bit, and a ready vring built into a [`Virtqueue`] for the data path.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::dispatch::Outcome;
use super::{Output, Session, Vring, F_PROTOCOL_FEATURES, PF_LOG_SHMFD};
use crate::codec::{LogArea, Message, Request, VringAddr, VringState, VRING_F_LOG};
use crate::error::Error;
use crate::memory::{DirtyLog, GuestMemory};
use crate::virtqueue::layout::packed;
use crate::virtqueue::layout::{avail, desc, used};
use crate::virtqueue::{feature, QueueSetup, Virtqueue, MAX_QUEUE_SIZE};

impl Session {
    /// `SET_MEM_TABLE`: maps the frontend's regions; a ring that broke may be set up again.
    pub(super) fn set_mem_table(&mut self, msg: &Message) -> Outcome {
        // The fds live in the message; we need them by value, so rebuild from duplicates.
        let Request::SetMemTable(specs, fds) = &msg.request else {
            return Outcome::Refused;
        };
        let dups: Result<Vec<OwnedFd>, _> = fds.iter().map(|f| f.try_clone()).collect();
        let dups = match dups {
            Ok(d) => d,
            Err(e) => return self.refuse(msg, &format!("cannot duplicate region fds: {e}")),
        };
        match GuestMemory::map(specs, dups) {
            Ok(m) => {
                tracing::info!(dev = %self.cfg.name, regions = m.region_count(), "memory table mapped");
                self.memory = Some(Arc::new(m));
                for v in &mut self.vrings {
                    v.failed = false;
                }
                Outcome::Ok
            }
            Err(e) => self.refuse(msg, &format!("memory table: {e}")),
        }
    }

    /// `SET_LOG_BASE`: maps the dirty log the frontend shares and answers (the frontend waits
    /// for that reply when `LOG_SHMFD` is negotiated, and only for it: an ack on top would be
    /// read as the answer to its next request). Queues lent before were taken back first
    /// ([`Session::handle`] holds the message until they are), so those lent next log into the
    /// new log and nothing writes into the old one once it is dropped.
    ///
    /// A log that cannot be mapped has no refusal the frontend would understand (the reply has
    /// no status), and migrating without it would lose the pages we write: the frontend is
    /// dropped instead ([`Output::close`]), and QEMU fails the migration and keeps the guest
    /// running where it is.
    pub(super) fn set_log_base(
        &mut self,
        msg: &Message,
        area: &LogArea,
        fd: &OwnedFd,
        out: &mut Output,
    ) -> Outcome {
        if self.protocol & PF_LOG_SHMFD == 0 {
            let why = String::from("SET_LOG_BASE without LOG_SHMFD negotiated");
            tracing::error!(dev = %self.cfg.name, "{why}; dropping the frontend");
            out.close = Some(why);
            return Outcome::Replied;
        }
        match DirtyLog::map(fd, area.size, area.offset) {
            Ok(log) => {
                tracing::info!(dev = %self.cfg.name, size = area.size, offset = area.offset, "dirty log mapped");
                self.log = Some(Arc::new(log));
                msg.header.reply(&[], &mut out.reply);
            }
            Err(e) => {
                let why = format!("SET_LOG_BASE: {e}");
                tracing::error!(dev = %self.cfg.name, "{why}; dropping the frontend");
                out.close = Some(why);
            }
        }
        Outcome::Replied
    }

    /// `SET_VRING_NUM`: the ring size, a power of two the rings can hold.
    pub(super) fn set_vring_num(&mut self, msg: &Message, s: &VringState) -> Outcome {
        if s.num == 0 || s.num > u32::from(MAX_QUEUE_SIZE) || !s.num.is_power_of_two() {
            return self.refuse(
                msg,
                &format!("queue size {} is not a power of two in 1..=32768", s.num),
            );
        }
        let Some(v) = self.vring_mut(s.index) else {
            return self.refuse(msg, &format!("no vring {}", s.index));
        };
        v.size = Some(s.num as u16);
        v.failed = false;
        Outcome::Ok
    }

    /// `SET_VRING_ADDR`: where the three rings lie in the frontend's address space.
    pub(super) fn set_vring_addr(&mut self, msg: &Message, a: &VringAddr) -> Outcome {
        if !a.desc.is_multiple_of(desc::ALIGN)
            || !a.avail.is_multiple_of(avail::ALIGN)
            || !a.used.is_multiple_of(used::ALIGN)
        {
            return self.refuse(
                msg,
                &format!(
                    "misaligned rings desc={:#x} avail={:#x} used={:#x}",
                    a.desc, a.avail, a.used
                ),
            );
        }
        let Some(v) = self.vring_mut(a.index) else {
            return self.refuse(msg, &format!("no vring {}", a.index));
        };
        v.addr = Some(*a);
        v.failed = false;
        Outcome::Ok
    }

    /// `SET_VRING_BASE`: the avail index the ring starts from. A packed ring's is bits 0-14 the
    /// slot and bit 15 its wrap counter; bits 16-31 (the used position, which QEMU may send)
    /// are ignored: this backend's used position always equals its avail one.
    pub(super) fn set_vring_base(&mut self, msg: &Message, s: &VringState) -> Outcome {
        let packed = self.features & feature::RING_PACKED != 0;
        if s.num > 0xffff && !packed {
            return self.refuse(msg, &format!("base {} exceeds 16 bits", s.num));
        }
        let Some(v) = self.vring_mut(s.index) else {
            return self.refuse(msg, &format!("no vring {}", s.index));
        };
        v.base = (s.num & 0xffff) as u16;
        v.failed = false;
        Outcome::Ok
    }

    /// `GET_VRING_BASE`: stops the ring and replies with where it stands. For a packed ring the
    /// used position (bits 16-31, vhost-user spec) is the avail one (bits 0-15).
    pub(super) fn get_vring_base(
        &mut self,
        msg: &Message,
        s: &VringState,
        out: &mut Output,
    ) -> Outcome {
        let packed = self.features & feature::RING_PACKED != 0;
        let base = match self.vring_mut(s.index) {
            Some(v) => {
                // Stops the ring (spec): it restarts with the next kick.
                v.started = false;
                v.kick = None;
                let b = u32::from(v.base);
                if packed {
                    b | b << 16
                } else {
                    b
                }
            }
            None => {
                tracing::warn!(dev = %self.cfg.name, index = s.index, "GET_VRING_BASE for a vring that does not exist; replying 0");
                0
            }
        };
        let mut p = s.index.to_le_bytes().to_vec();
        p.extend_from_slice(&base.to_le_bytes());
        msg.header.reply(&p, &mut out.reply);
        Outcome::Replied
    }

    /// `SET_VRING_ENABLE`: the ring may (1) or may not (0) go to the data path.
    pub(super) fn set_vring_enable(&mut self, msg: &Message, s: &VringState) -> Outcome {
        if s.num > 1 {
            return self.refuse(msg, &format!("enable value {} is not 0 or 1", s.num));
        }
        let Some(v) = self.vring_mut(s.index) else {
            return self.refuse(msg, &format!("no vring {}", s.index));
        };
        v.enabled = s.num == 1;
        Outcome::Ok
    }

    /// `SET_VRING_KICK`, `SET_VRING_CALL`, `SET_VRING_ERR`: the eventfd of one of the ring's
    /// notifications, or none (polled); a kick also starts the ring.
    pub(super) fn set_vring_fd(&mut self, msg: &Message) -> Outcome {
        let (Request::SetVringKick(f) | Request::SetVringCall(f) | Request::SetVringErr(f)) =
            &msg.request
        else {
            return Outcome::Refused;
        };
        // The fd lives in the message, which the logs still need: keep a duplicate.
        let fd = match f.fd.as_ref().map(|fd| fd.try_clone()).transpose() {
            Ok(fd) => fd,
            Err(e) => return self.refuse(msg, &format!("cannot duplicate fd: {e}")),
        };
        let Some(v) = self.vring_mut(f.index) else {
            return self.refuse(msg, &format!("no vring {}", f.index));
        };
        match &msg.request {
            Request::SetVringKick(_) => {
                v.kick = fd;
                v.started = true;
                v.failed = false;
            }
            Request::SetVringCall(_) => v.call = fd.map(Arc::new),
            _ => v.err = fd,
        }
        Outcome::Ok
    }

    fn vring_mut(&mut self, index: u32) -> Option<&mut Vring> {
        self.vrings.get_mut(index as usize)
    }

    /// Reports vrings that became ready, once each: a vring already announced and not yet
    /// taken is not reported again (the driver takes it with its latest configuration), and one
    /// that stopped being ready is forgotten so it is reported when it is ready again.
    pub(super) fn announce_ready(&mut self, out: &mut Output) {
        let protocol_enabled = self.features & F_PROTOCOL_FEATURES != 0;
        for (i, v) in self.vrings.iter_mut().enumerate() {
            if v.lent {
                continue;
            }
            let ready = v.ready(self.memory.as_ref(), protocol_enabled).is_ok();
            if ready && !v.announced {
                out.ready.push(i as u16);
            }
            v.announced = ready;
        }
    }

    /// Takes a ready vring for the data path.
    pub fn take_queue(&mut self, index: u16) -> Result<Virtqueue, Error> {
        let features = self.features;
        let protocol_enabled = self.features & F_PROTOCOL_FEATURES != 0;
        let v = self
            .vrings
            .get_mut(usize::from(index))
            .ok_or(Error::VringIndex(u32::from(index)))?;
        let (mem, size, addr) = v
            .ready(self.memory.as_ref(), protocol_enabled)
            .map_err(|why| Error::NotReady { index, why })?;
        // While the frontend migrates the guest, the queue gets a view of the memory that logs
        // every write; otherwise the plain one.
        let mem = match &self.log {
            Some(log) if features & super::F_LOG_ALL != 0 => {
                Arc::new(mem.with_log(Some(Arc::clone(log))))
            }
            _ => Arc::clone(mem),
        };
        let mem = &mem;
        // A packed ring's driver and device areas are the 4-byte event suppression structures.
        let (avail_len, used_len) = if features & feature::RING_PACKED != 0 {
            (packed::event::LEN, packed::event::LEN)
        } else {
            (avail::len(size), used::len(size))
        };
        let built = (|| {
            let setup = QueueSetup {
                index,
                size,
                desc_gpa: mem.uva_to_gpa(addr.desc, desc::table_len(size))?,
                avail_gpa: mem.uva_to_gpa(addr.avail, avail_len)?,
                used_gpa: mem.uva_to_gpa(addr.used, used_len)?,
                mem: Arc::clone(mem),
                base: v.base,
                features,
                call: v.call.clone(),
            };
            let mut q = Virtqueue::new(setup)?;
            if addr.flags & VRING_F_LOG != 0 {
                q.log_used_at(addr.log);
            }
            Ok::<_, crate::MemoryError>(q)
        })();
        match built {
            Ok(q) => {
                v.lent = true;
                v.stopping = false;
                v.announced = false;
                Ok(q)
            }
            Err(e) => {
                tracing::error!(dev = %self.cfg.name, vring = index, %e, "rings are not in mapped guest memory; vring not started");
                v.failed = true;
                v.announced = false;
                v.signal_err();
                Err(e.into())
            }
        }
    }
}

impl Vring {
    /// What the vring needs to go to the data path (the memory table, its size, its ring
    /// addresses), or the first thing it misses. Announcing a vring and taking it both ask
    /// here, so the two cannot disagree about what ready means.
    fn ready<'m>(
        &self,
        memory: Option<&'m Arc<GuestMemory>>,
        protocol_enabled: bool,
    ) -> Result<(&'m Arc<GuestMemory>, u16, VringAddr), &'static str> {
        if self.lent {
            return Err("already lent");
        }
        let mem = memory.ok_or("no memory table")?;
        let size = self.size.ok_or("no size")?;
        let addr = self.addr.ok_or("no ring addresses")?;
        if !self.started {
            return Err("no kick");
        }
        if protocol_enabled && !self.enabled {
            return Err("disabled");
        }
        if self.failed {
            return Err("broken");
        }
        Ok((mem, size, addr))
    }
}
