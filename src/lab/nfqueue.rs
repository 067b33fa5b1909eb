//! A minimal NFQUEUE client: the netlink messages that bind queues, receive the
//! packets iptables' `-j NFQUEUE` hands to user space, and give their verdicts.
//!
//! Written here rather than taken from the `nfq` crate because the lab's verdict loop
//! must wait on the socket and on its next deadline at once (`ppoll` with a
//! nanosecond timeout), which needs the socket's descriptor; `nfq` does not expose it.
//! Everything is plain byte buffers over a nix netlink socket: no `unsafe`.
//!
//! Message layouts are those of `linux/netfilter/nfnetlink_queue.h`: a netlink header
//! (16 bytes), an `nfgenmsg` (4 bytes, the queue number big-endian), then attributes.
//! Owns the wire format only; what to do with a packet is the emulator's business.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    socket,
};

/// `NFNL_SUBSYS_QUEUE`.
const SUBSYS_QUEUE: u16 = 3;
const MSG_PACKET: u16 = SUBSYS_QUEUE << 8;
const MSG_VERDICT: u16 = (SUBSYS_QUEUE << 8) | 1;
const MSG_CONFIG: u16 = (SUBSYS_QUEUE << 8) | 2;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
/// Attribute types (`NFQA_*`, `NFQA_CFG_*`).
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_TIMESTAMP: u16 = 4;
const NFQA_PAYLOAD: u16 = 10;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const CMD_BIND: u8 = 1;
const COPY_PACKET: u8 = 2;
/// The flag bits of an attribute's type.
const NLA_TYPE_MASK: u16 = !(3 << 14);

/// What to do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Drop = 0,
    Accept = 1,
}

/// One queued packet, as the kernel described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub queue: u16,
    pub id: u32,
    /// When the kernel received it (`skb->tstamp`), if it recorded that.
    pub timestamp: Option<SystemTime>,
    /// The start of the packet (the network header on), up to the copy range.
    pub payload: Vec<u8>,
}

/// A netlink socket bound to one or more NFQUEUE queues, in the network namespace of
/// the thread that opened it. Several threads may read it and give verdicts at once.
pub struct Queue {
    fd: OwnedFd,
}

/// The bytes one reader of a [`Queue`] receives into.
pub fn receive_buffer() -> Vec<u8> {
    vec![0; 1 << 16]
}

impl Queue {
    /// Opens the socket and binds `queues`, asking for the first `copy` bytes of each
    /// packet and room for `max_len` packets waiting for their verdict.
    pub fn open(queues: &[u16], copy: u16, max_len: u32) -> io::Result<Queue> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        // Held packets are in the kernel's queue, not in this buffer; it only has to
        // take a burst of arrivals while the loop is busy giving verdicts.
        crate::sockopt::grow_receive_buffer(&fd, 8 << 20);
        let q = Queue { fd };
        let mut buf = receive_buffer();
        let mut seq = 0;
        for &queue in queues {
            let mut params = copy_range_be(copy).to_vec();
            params.push(COPY_PACKET);
            for (attr, value) in [
                (NFQA_CFG_CMD, &[CMD_BIND, 0, 0, 0][..]),
                (NFQA_CFG_PARAMS, &params[..]),
                (NFQA_CFG_QUEUE_MAXLEN, &max_len.to_be_bytes()[..]),
            ] {
                seq += 1;
                q.config(queue, attr, value, seq, &mut buf)?;
            }
        }
        Ok(q)
    }

    /// Sends one configuration attribute for `queue` and waits for the kernel's answer.
    fn config(
        &self,
        queue: u16,
        attr: u16,
        value: &[u8],
        seq: u32,
        buf: &mut [u8],
    ) -> io::Result<()> {
        let mut msg = Vec::with_capacity(32);
        header(&mut msg, MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq, queue);
        put_attr(&mut msg, attr, value);
        finish(&mut msg, 0);
        send(self.fd.as_raw_fd(), &msg, MsgFlags::empty())?;
        loop {
            let n = recv(self.fd.as_raw_fd(), buf, MsgFlags::empty())?;
            for m in messages(&buf[..n]) {
                if m.kind == NLMSG_ERROR && m.seq == seq {
                    let code = m
                        .body
                        .get(..4)
                        .and_then(|b| b.try_into().ok())
                        .map_or(0, i32::from_ne_bytes);
                    return match code {
                        0 => Ok(()),
                        e => Err(io::Error::from_raw_os_error(-e)),
                    };
                }
            }
        }
    }

    /// Reads every packet waiting on the socket without blocking, calling `each` for
    /// each. Returns how many socket overflows the kernel reported (packets it could
    /// not hand over, and dropped).
    pub fn drain(&self, buf: &mut [u8], mut each: impl FnMut(Packet)) -> io::Result<u64> {
        let mut overflows = 0;
        loop {
            let n = match recv(self.fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(nix::Error::EAGAIN) => return Ok(overflows),
                Err(nix::Error::EINTR) => continue,
                Err(nix::Error::ENOBUFS) => {
                    overflows += 1;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            for m in messages(&buf[..n]) {
                if m.kind == MSG_PACKET
                    && let Some(p) = parse_packet(m.queue, m.attrs)
                {
                    each(p);
                }
            }
        }
    }

    /// Gives the verdicts of several packets in one system call.
    pub fn verdicts(&self, batch: &[(u16, u32, Verdict)]) -> io::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut msg = Vec::with_capacity(batch.len() * 32);
        for &(queue, id, verdict) in batch {
            let start = msg.len();
            header(&mut msg, MSG_VERDICT, NLM_F_REQUEST, 0, queue);
            let mut hdr = [0u8; 8];
            hdr[..4].copy_from_slice(&(verdict as u32).to_be_bytes());
            hdr[4..].copy_from_slice(&id.to_be_bytes());
            put_attr(&mut msg, NFQA_VERDICT_HDR, &hdr);
            finish(&mut msg, start);
        }
        loop {
            match send(self.fd.as_raw_fd(), &msg, MsgFlags::empty()) {
                Ok(_) => return Ok(()),
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl AsFd for Queue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn copy_range_be(copy: u16) -> [u8; 4] {
    u32::from(copy).to_be_bytes()
}

/// Appends a netlink header (length filled in by [`finish`]) and an `nfgenmsg`.
fn header(msg: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, queue: u16) {
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: AF_UNSPEC, version 0, the queue number big-endian.
    msg.extend_from_slice(&[0, 0]);
    msg.extend_from_slice(&queue.to_be_bytes());
}

fn put_attr(msg: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    msg.extend_from_slice(&(len as u16).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(value);
    msg.resize(msg.len() + align(len) - len, 0);
}

/// Writes the length of the message that starts at `start`.
fn finish(msg: &mut [u8], start: usize) {
    let len = (msg.len() - start) as u32;
    msg[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// One netlink message of a received datagram.
struct Message<'a> {
    kind: u16,
    seq: u32,
    /// The queue number, for nfnetlink messages.
    queue: u16,
    /// Everything after the netlink header.
    body: &'a [u8],
    /// The attributes after the `nfgenmsg`.
    attrs: &'a [u8],
}

/// The messages of one datagram; a truncated or malformed one ends the walk.
fn messages(mut buf: &[u8]) -> impl Iterator<Item = Message<'_>> {
    std::iter::from_fn(move || {
        if buf.len() < 16 {
            return None;
        }
        let len = u32::from_ne_bytes(buf[0..4].try_into().ok()?) as usize;
        if len < 16 || len > buf.len() {
            return None;
        }
        let kind = u16::from_ne_bytes(buf[4..6].try_into().ok()?);
        let seq = u32::from_ne_bytes(buf[8..12].try_into().ok()?);
        let body = &buf[16..len];
        let (queue, attrs) = if body.len() >= 4 {
            (u16::from_be_bytes([body[2], body[3]]), &body[4..])
        } else {
            (0, &body[..0])
        };
        buf = buf.get(align(len)..).unwrap_or(&[]);
        Some(Message {
            kind,
            seq,
            queue,
            body,
            attrs,
        })
    })
}

/// The attributes of a message: (type, value).
fn attributes(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return None;
        }
        let value = &buf[4..len];
        buf = buf.get(align(len)..).unwrap_or(&[]);
        Some((kind, value))
    })
}

fn parse_packet(queue: u16, attrs: &[u8]) -> Option<Packet> {
    let mut id = None;
    let mut timestamp = None;
    let mut payload = Vec::new();
    for (kind, value) in attributes(attrs) {
        match kind {
            NFQA_PACKET_HDR if value.len() >= 4 => {
                id = Some(u32::from_be_bytes(value[..4].try_into().ok()?));
            }
            NFQA_TIMESTAMP if value.len() >= 16 => {
                let sec = u64::from_be_bytes(value[..8].try_into().ok()?);
                let usec = u64::from_be_bytes(value[8..16].try_into().ok()?);
                timestamp = UNIX_EPOCH.checked_add(
                    Duration::from_secs(sec) + Duration::from_micros(usec.min(999_999)),
                );
            }
            NFQA_PAYLOAD => payload = value.to_vec(),
            _ => {}
        }
    }
    Some(Packet {
        queue,
        id: id?,
        timestamp,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A netlink header and an nfgenmsg.
    const HEADER: usize = 16 + 4;

    fn packet_message(queue: u16, id: u32, ts: Option<(u64, u64)>, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        header(&mut m, MSG_PACKET, 0, 0, queue);
        let mut hdr = id.to_be_bytes().to_vec();
        hdr.extend_from_slice(&[0x08, 0x00, 2]);
        put_attr(&mut m, NFQA_PACKET_HDR, &hdr);
        if let Some((s, u)) = ts {
            let mut t = s.to_be_bytes().to_vec();
            t.extend_from_slice(&u.to_be_bytes());
            put_attr(&mut m, NFQA_TIMESTAMP, &t);
        }
        put_attr(&mut m, NFQA_PAYLOAD, payload);
        finish(&mut m, 0);
        m
    }

    #[test]
    fn packets_parse_with_and_without_timestamp() {
        let mut buf = packet_message(1, 77, Some((1_700_000_000, 250)), &[0x45, 0, 0, 20]);
        buf.extend(packet_message(0, 78, None, &[1, 2, 3]));
        let got: Vec<Packet> = messages(&buf)
            .filter(|m| m.kind == MSG_PACKET)
            .filter_map(|m| parse_packet(m.queue, m.attrs))
            .collect();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].queue, got[0].id), (1, 77));
        assert_eq!(
            got[0].timestamp,
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_micros(250))
        );
        assert_eq!(got[0].payload, [0x45, 0, 0, 20]);
        assert_eq!((got[1].queue, got[1].id, got[1].timestamp), (0, 78, None));
    }

    #[test]
    fn truncated_or_lying_lengths_end_the_walk_without_panicking() {
        let good = packet_message(0, 5, None, &[9; 7]);
        for cut in 0..good.len() {
            let _ = messages(&good[..cut])
                .filter_map(|m| parse_packet(m.queue, m.attrs))
                .count();
        }
        let mut lying = good.clone();
        lying[0..4].copy_from_slice(&10_000u32.to_ne_bytes());
        assert_eq!(messages(&lying).count(), 0);
        // An attribute claiming more than the message holds.
        let mut bad_attr = good;
        bad_attr[HEADER..HEADER + 2].copy_from_slice(&500u16.to_ne_bytes());
        let parsed: Vec<_> = messages(&bad_attr)
            .filter_map(|m| parse_packet(m.queue, m.attrs))
            .collect();
        assert!(parsed.is_empty(), "no packet id, no packet");
    }

    #[test]
    fn a_verdict_batch_is_one_message_per_packet() {
        let mut msg = Vec::new();
        for (queue, id) in [(0u16, 1u32), (1, 2)] {
            let start = msg.len();
            header(&mut msg, MSG_VERDICT, NLM_F_REQUEST, 0, queue);
            let mut hdr = [0u8; 8];
            hdr[..4].copy_from_slice(&1u32.to_be_bytes());
            hdr[4..].copy_from_slice(&id.to_be_bytes());
            put_attr(&mut msg, NFQA_VERDICT_HDR, &hdr);
            finish(&mut msg, start);
        }
        let ms: Vec<_> = messages(&msg).collect();
        assert_eq!(ms.len(), 2);
        assert_eq!((ms[1].kind, ms[1].queue), (MSG_VERDICT, 1));
        let (kind, value) = attributes(ms[1].attrs).next().expect("an attribute");
        assert_eq!(kind, NFQA_VERDICT_HDR);
        assert_eq!(value, [0, 0, 0, 1, 0, 0, 0, 2]);
    }
}
