//! STAMP test packets (RFC 8762, unauthenticated mode): encoding, decoding, NTP time.
//!
//! Owns only the wire format. Sending, matching and the reflector loop live elsewhere.
//! Layouts (RFC 8762, figures 2 and 4), all fields big-endian:
//!
//! ```text
//! session-sender (44 bytes)            session-reflector (44 bytes)
//!  0 sequence number (4)                0 sequence number (4)
//!  4 timestamp (8)                      4 timestamp: transmit, T3 (8)
//! 12 error estimate (2)                12 error estimate (2)
//! 14 MBZ (30)                          14 MBZ (2)
//!                                      16 receive timestamp, T2 (8)
//!                                      24 session-sender sequence number (4)
//!                                      28 session-sender timestamp, T1 (8)
//!                                      36 session-sender error estimate (2)
//!                                      38 MBZ (2)
//!                                      40 session-sender TTL (1)
//!                                      41 MBZ (3)
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Length of an unauthenticated STAMP test packet, sender and reflector alike.
pub const PACKET_LEN: usize = 44;

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
        let secs = (since_unix.as_secs() + NTP_UNIX_OFFSET) & 0xffff_ffff;
        let frac = ((u64::from(since_unix.subsec_nanos())) << 32) / 1_000_000_000;
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
    /// Writes the packet into `buf` (at least [`PACKET_LEN`] bytes; the rest, the
    /// padding, is zeroed). Returns the number of bytes to send (`buf.len()`).
    pub fn encode(&self, buf: &mut [u8]) -> usize {
        debug_assert!(buf.len() >= PACKET_LEN);
        buf.fill(0);
        put_header(buf, 0, self.seq, self.timestamp, self.error_estimate);
        buf.len()
    }

    pub fn decode(buf: &[u8]) -> Result<SenderPacket, PacketError> {
        if buf.len() < PACKET_LEN {
            return Err(PacketError::TooShort(buf.len()));
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
    pub sender_ttl: u8,
}

impl ReflectorPacket {
    /// Writes the packet into `buf` (at least [`PACKET_LEN`] bytes; padding zeroed).
    pub fn encode(&self, buf: &mut [u8]) -> usize {
        debug_assert!(buf.len() >= PACKET_LEN);
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
        buf[40] = self.sender_ttl;
        buf.len()
    }

    pub fn decode(buf: &[u8]) -> Result<ReflectorPacket, PacketError> {
        if buf.len() < PACKET_LEN {
            return Err(PacketError::TooShort(buf.len()));
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
            sender_ttl: buf[40],
        })
    }

    /// The reflector's dwell time T3 − T2, if it is plausible (not negative).
    pub fn dwell(&self) -> Option<Duration> {
        let nanos = self.timestamp.nanos_since(self.receive_timestamp);
        u64::try_from(nanos).ok().map(Duration::from_nanos)
    }
}

/// A packet that is not a STAMP test packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("{0} bytes is shorter than a STAMP test packet ({PACKET_LEN} bytes)")]
    TooShort(usize),
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
            sender_ttl: 64,
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
            SenderPacket::decode(&[0; 43]),
            Err(PacketError::TooShort(43))
        );
        assert_eq!(ReflectorPacket::decode(&[]), Err(PacketError::TooShort(0)));
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
