//! STAMP test packets (RFC 8762, unauthenticated mode) and their TWAMP-Light cousins
//! (RFC 5357, Appendix I): encoding, decoding, telling a request from a reply, NTP time.
//!
//! Owns only the wire format. Sending, matching and the reflector loop live elsewhere.
//! Layouts (RFC 8762 figures 2 and 4; RFC 5357 sections 4.1.2 and 4.2.1), big-endian:
//!
//! ```text
//! session-sender (STAMP: 44 bytes;      session-reflector (STAMP: 44 bytes;
//!   TWAMP Light: 14 + padding)            TWAMP Light: 41 + padding, some send 38)
//!  0 sequence number (4)                0 sequence number (4)
//!  4 timestamp (8)                      4 timestamp: transmit, T3 (8)
//! 12 error estimate (2)                12 error estimate (2)
//! 14 MBZ (30) / padding                14 MBZ (2)
//!                                      16 receive timestamp, T2 (8)
//!                                      24 session-sender sequence number (4)
//!                                      28 session-sender timestamp, T1 (8)
//!                                      36 session-sender error estimate (2)
//!                                      38 MBZ (2)
//!                                      40 session-sender TTL (1)
//!                                      41 MBZ (3) / padding
//! ```
//!
//! A reflector must never answer a reply (two reflectors would bounce one forged packet
//! between them forever), so [`shape`] tells the two apart: a sender's bytes after its
//! error estimate are zero (STAMP) or padding, a reply's carry T2 and the sender's copy.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Length of an unauthenticated STAMP test packet, sender and reflector alike.
pub const PACKET_LEN: usize = 44;

/// The shortest session-sender packet: TWAMP Light's sequence number, timestamp and
/// error estimate (RFC 5357 section 4.1.2), without padding.
pub const SENDER_MIN_LEN: usize = 14;

/// The shortest reply that carries what a round trip needs: both reflector
/// timestamps and the sender's sequence number, timestamp and error estimate.
pub const REFLECTOR_MIN_LEN: usize = 38;

/// The TWAMP-Light reflector packet up to and including the Session-Sender TTL
/// (RFC 5357 section 4.2.1: "the minimum data segment length ... is 41 octets").
pub const TWAMP_REFLECTOR_LEN: usize = 41;

/// Seconds from the NTP era 0 epoch (1900-01-01) to the Unix epoch.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// A 64-bit NTP timestamp: seconds since 1900 and a binary fraction of a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct NtpTimestamp(pub u64);

impl NtpTimestamp {
    pub fn now() -> NtpTimestamp {
        NtpTimestamp::from_system_time(SystemTime::now())
    }

    pub fn from_system_time(t: SystemTime) -> NtpTimestamp {
        let since_unix = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        NtpTimestamp::from_unix_nanos(since_unix.as_nanos() as u64)
    }

    /// From nanoseconds since the Unix epoch.
    pub fn from_unix_nanos(nanos: u64) -> NtpTimestamp {
        let secs = (nanos / 1_000_000_000 + NTP_UNIX_OFFSET) & 0xffff_ffff;
        let frac = ((nanos % 1_000_000_000) << 32) / 1_000_000_000;
        NtpTimestamp((secs << 32) | frac)
    }

    /// Signed difference `self - earlier` in nanoseconds, tolerant of era wrap-around.
    pub fn nanos_since(self, earlier: NtpTimestamp) -> i64 {
        let diff = self.0.wrapping_sub(earlier.0) as i64; // 32.32 fixed point
        ((i128::from(diff) * 1_000_000_000) >> 32) as i64
    }
}

/// Error estimate (RFC 4656 section 4.1.2): S bit, Z bit (0 = NTP format), scale,
/// multiplier. latmap does not claim synchronized clocks (S = 0) and states an error of
/// about 1 ms (multiplier 1, scale 22: 2^22 / 2^32 s).
pub const ERROR_ESTIMATE: u16 = (22 << 8) | 1;

/// The fields of a session-sender test packet that latmap reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderPacket {
    pub seq: u32,
    pub timestamp: NtpTimestamp,
    pub error_estimate: u16,
}

impl SenderPacket {
    /// Writes the packet into `buf` (at least [`SENDER_MIN_LEN`] bytes; the rest, MBZ
    /// and padding, is zeroed). Returns the number of bytes to send (`buf.len()`).
    pub fn encode(&self, buf: &mut [u8]) -> usize {
        debug_assert!(buf.len() >= SENDER_MIN_LEN);
        buf.fill(0);
        put_header(buf, 0, self.seq, self.timestamp, self.error_estimate);
        buf.len()
    }

    /// Reads a STAMP or TWAMP-Light sender packet (at least [`SENDER_MIN_LEN`] bytes).
    /// It does not tell a request from a reply: see [`shape`].
    pub fn decode(buf: &[u8]) -> Result<SenderPacket, PacketError> {
        if buf.len() < SENDER_MIN_LEN {
            return Err(PacketError::TooShort {
                len: buf.len(),
                min: SENDER_MIN_LEN,
            });
        }
        let (seq, timestamp, error_estimate) = get_header(buf, 0);
        Ok(SenderPacket {
            seq,
            timestamp,
            error_estimate,
        })
    }
}

/// A session-reflector test packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReflectorPacket {
    pub seq: u32,
    /// T3: when the reflector sent this packet.
    pub timestamp: NtpTimestamp,
    pub error_estimate: u16,
    /// T2: when the reflector received the sender's packet.
    pub receive_timestamp: NtpTimestamp,
    pub sender_seq: u32,
    /// T1: copied from the sender's packet.
    pub sender_timestamp: NtpTimestamp,
    pub sender_error_estimate: u16,
    /// The IP TTL (hop limit) the sender's packet arrived with; `None` when the reply is
    /// too short to carry it, or carries 0 (no packet arrives with TTL 0: "unknown").
    pub sender_ttl: Option<u8>,
}

impl ReflectorPacket {
    /// Writes the packet into `buf` (at least [`TWAMP_REFLECTOR_LEN`] bytes; MBZ and
    /// padding zeroed).
    pub fn encode(&self, buf: &mut [u8]) -> usize {
        debug_assert!(buf.len() >= TWAMP_REFLECTOR_LEN);
        buf.fill(0);
        put_header(buf, 0, self.seq, self.timestamp, self.error_estimate);
        buf[16..24].copy_from_slice(&self.receive_timestamp.0.to_be_bytes());
        // The sender's header, copied: the same three fields at offset 24.
        put_header(
            buf,
            24,
            self.sender_seq,
            self.sender_timestamp,
            self.sender_error_estimate,
        );
        buf[40] = self.sender_ttl.unwrap_or(0);
        buf.len()
    }

    /// Reads a STAMP or TWAMP-Light reply: anything of at least [`REFLECTOR_MIN_LEN`]
    /// bytes carries the fields a round trip needs.
    pub fn decode(buf: &[u8]) -> Result<ReflectorPacket, PacketError> {
        if buf.len() < REFLECTOR_MIN_LEN {
            return Err(PacketError::TooShort {
                len: buf.len(),
                min: REFLECTOR_MIN_LEN,
            });
        }
        let (seq, timestamp, error_estimate) = get_header(buf, 0);
        let (sender_seq, sender_timestamp, sender_error_estimate) = get_header(buf, 24);
        Ok(ReflectorPacket {
            seq,
            timestamp,
            error_estimate,
            receive_timestamp: NtpTimestamp(be_u64(&buf[16..24])),
            sender_seq,
            sender_timestamp,
            sender_error_estimate,
            sender_ttl: buf.get(40).copied().filter(|&t| t != 0),
        })
    }

    /// The reflector's dwell time T3 − T2, if it is plausible (not negative).
    pub fn dwell(&self) -> Option<Duration> {
        let nanos = self.timestamp.nanos_since(self.receive_timestamp);
        u64::try_from(nanos).ok().map(Duration::from_nanos)
    }
}

/// What a datagram on a STAMP port is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A session-sender packet: answer it.
    Sender,
    /// A session-reflector packet: a reply, never to be answered.
    Reflector,
}

/// Tells a sender's packet from a reflector's.
///
/// A STAMP sender's 30 bytes after the error estimate must be zero (RFC 8762 figure 2);
/// a TWAMP-Light sender puts padding there, which may be pseudo-random. A reply has
/// its MBZ bytes 14–15 (and 38–39) zero and carries T2 or the sender's sequence number,
/// timestamp and error estimate at 16–37, which are never all zero in a reply. So a
/// packet is a reply when it is long enough to be one, those MBZ bytes are zero and
/// bytes 16–37 are not. A sender's random padding looks like that by chance once in
/// 2^32 packets; zero padding never does.
pub fn shape(buf: &[u8]) -> Result<Shape, PacketError> {
    if buf.len() < SENDER_MIN_LEN {
        return Err(PacketError::TooShort {
            len: buf.len(),
            min: SENDER_MIN_LEN,
        });
    }
    let zero = |r: std::ops::Range<usize>| buf.get(r).is_none_or(|b| b.iter().all(|&x| x == 0));
    let reply = buf.len() >= REFLECTOR_MIN_LEN && zero(14..16) && zero(38..40) && !zero(16..38);
    Ok(if reply {
        Shape::Reflector
    } else {
        Shape::Sender
    })
}

/// The length of the reply to a sender packet of `request_len` bytes: the same size
/// (RFC 8762's symmetric size, RFC 5357's padding), but never shorter than the
/// TWAMP-Light reflector packet, which carries every field.
pub fn reply_len(request_len: usize) -> usize {
    request_len.max(TWAMP_REFLECTOR_LEN)
}

/// A packet that is not a STAMP test packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("{len} bytes is shorter than the {min} bytes of this test packet")]
    TooShort { len: usize, min: usize },
}

/// Sequence number, timestamp and error estimate at `at`: the head of every STAMP test
/// packet, and the sender's copy inside a reflected one.
fn put_header(buf: &mut [u8], at: usize, seq: u32, timestamp: NtpTimestamp, error_estimate: u16) {
    buf[at..at + 4].copy_from_slice(&seq.to_be_bytes());
    buf[at + 4..at + 12].copy_from_slice(&timestamp.0.to_be_bytes());
    buf[at + 12..at + 14].copy_from_slice(&error_estimate.to_be_bytes());
}

fn get_header(buf: &[u8], at: usize) -> (u32, NtpTimestamp, u16) {
    (
        be_u32(&buf[at..at + 4]),
        NtpTimestamp(be_u64(&buf[at + 4..at + 12])),
        be_u16(&buf[at + 12..at + 14]),
    )
}

fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_packet_lays_out_as_rfc_8762_figure_2() {
        let p = SenderPacket {
            seq: 0x0102_0304,
            timestamp: NtpTimestamp(0x1112_1314_1516_1718),
            error_estimate: 0x2122,
        };
        let mut buf = [0xffu8; PACKET_LEN];
        assert_eq!(p.encode(&mut buf), 44);
        let mut want = [0u8; 44];
        want[..14].copy_from_slice(&[
            1, 2, 3, 4, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x21, 0x22,
        ]);
        assert_eq!(buf, want);
        assert_eq!(SenderPacket::decode(&buf), Ok(p));
    }

    #[test]
    fn reflector_packet_lays_out_as_rfc_8762_figure_4() {
        let p = ReflectorPacket {
            seq: 7,
            timestamp: NtpTimestamp(0x0a0a_0a0a_0b0b_0b0b),
            error_estimate: 0x0c0d,
            receive_timestamp: NtpTimestamp(0x1010_1010_2020_2020),
            sender_seq: 0xdead_beef,
            sender_timestamp: NtpTimestamp(0x3030_3030_4040_4040),
            sender_error_estimate: 0x5051,
            sender_ttl: Some(64),
        };
        let mut buf = vec![0xee; 60]; // padded packet: padding must come out zero
        assert_eq!(p.encode(&mut buf), 60);
        assert_eq!(&buf[0..4], &[0, 0, 0, 7]);
        assert_eq!(
            &buf[4..12],
            &[0x0a, 0x0a, 0x0a, 0x0a, 0x0b, 0x0b, 0x0b, 0x0b]
        );
        assert_eq!(&buf[12..14], &[0x0c, 0x0d]);
        assert_eq!(&buf[14..16], &[0, 0], "MBZ");
        assert_eq!(
            &buf[16..24],
            &[0x10, 0x10, 0x10, 0x10, 0x20, 0x20, 0x20, 0x20]
        );
        assert_eq!(&buf[24..28], &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(
            &buf[28..36],
            &[0x30, 0x30, 0x30, 0x30, 0x40, 0x40, 0x40, 0x40]
        );
        assert_eq!(&buf[36..38], &[0x50, 0x51]);
        assert_eq!(&buf[38..40], &[0, 0], "MBZ");
        assert_eq!(buf[40], 64);
        assert_eq!(&buf[41..], &[0u8; 19][..], "MBZ and padding");
        assert_eq!(ReflectorPacket::decode(&buf), Ok(p));
    }

    #[test]
    fn short_packets_are_rejected_not_read() {
        assert_eq!(
            SenderPacket::decode(&[0; 13]),
            Err(PacketError::TooShort { len: 13, min: 14 })
        );
        assert_eq!(
            ReflectorPacket::decode(&[0; 37]),
            Err(PacketError::TooShort { len: 37, min: 38 })
        );
        assert!(shape(&[1; 13]).is_err());
    }

    #[test]
    fn twamp_light_packets_decode() {
        // A 14-byte TWAMP-Light request.
        let mut req = [0u8; 14];
        SenderPacket {
            seq: 9,
            timestamp: NtpTimestamp(5 << 32),
            error_estimate: ERROR_ESTIMATE,
        }
        .encode(&mut req);
        assert_eq!(SenderPacket::decode(&req).map(|p| p.seq), Ok(9));
        assert_eq!(shape(&req), Ok(Shape::Sender));
        assert_eq!(reply_len(14), 41);
        assert_eq!(reply_len(44), 44);
        assert_eq!(reply_len(100), 100);
        // A reply of only the fields up to the sender's error estimate: no TTL.
        let full = ReflectorPacket {
            seq: 1,
            timestamp: NtpTimestamp(7 << 32),
            error_estimate: ERROR_ESTIMATE,
            receive_timestamp: NtpTimestamp(6 << 32),
            sender_seq: 9,
            sender_timestamp: NtpTimestamp(5 << 32),
            sender_error_estimate: ERROR_ESTIMATE,
            sender_ttl: Some(61),
        };
        let mut buf = [0u8; 41];
        full.encode(&mut buf);
        let short = ReflectorPacket::decode(&buf[..38]).unwrap();
        assert_eq!(short.sender_ttl, None);
        assert_eq!(
            ReflectorPacket::decode(&buf).unwrap().sender_ttl,
            Some(61),
            "41 bytes carry the TTL"
        );
        assert_eq!(shape(&buf[..38]), Ok(Shape::Reflector));
    }

    #[test]
    fn requests_and_replies_are_told_apart() {
        // A zeroed STAMP request, however long, is a request.
        assert_eq!(shape(&[0; 44]), Ok(Shape::Sender));
        assert_eq!(shape(&[0; 200]), Ok(Shape::Sender));
        // So is a TWAMP-Light request with random padding (MBZ bytes not zero).
        let mut padded = [0xa5u8; 60];
        padded[..14].fill(1);
        assert_eq!(shape(&padded), Ok(Shape::Sender));
        // A reply to an all-zero request still has T2, so it is a reply.
        let reply = ReflectorPacket {
            seq: 0,
            timestamp: NtpTimestamp::now(),
            error_estimate: ERROR_ESTIMATE,
            receive_timestamp: NtpTimestamp::now(),
            sender_seq: 0,
            sender_timestamp: NtpTimestamp(0),
            sender_error_estimate: 0,
            sender_ttl: None,
        };
        for len in [38, 41, 44, 100] {
            let mut buf = vec![0u8; len.max(41)];
            reply.encode(&mut buf);
            assert_eq!(shape(&buf[..len]), Ok(Shape::Reflector), "{len} bytes");
        }
    }

    #[test]
    fn ntp_time_converts_and_subtracts() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 500_000_000);
        let ntp = NtpTimestamp::from_system_time(t);
        assert_eq!(ntp.0 >> 32, 1_700_000_000 + NTP_UNIX_OFFSET);
        assert_eq!(ntp.0 & 0xffff_ffff, 1 << 31, "half a second");
        let later = NtpTimestamp::from_system_time(t + Duration::from_micros(1234));
        let d = later.nanos_since(ntp);
        assert!((d - 1_234_000).abs() <= 1, "{d}");
        assert!((ntp.nanos_since(later) + 1_234_000).abs() <= 1);
        // error estimate: S=0, Z=0, scale 22, multiplier 1
        assert_eq!(ERROR_ESTIMATE.to_be_bytes(), [22, 1]);
    }
}
