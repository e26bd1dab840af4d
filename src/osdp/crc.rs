//! OSDP's two check characters: CRC-16 (CTRL bit 2 set) and the 8-bit checksum (bit 2 clear).
//!
//! The CRC is CRC-16/AUG-CCITT: polynomial 0x1021, initial value 0x1D0F, not reflected, no
//! final XOR. It is sent little-endian after the frame. The checksum is the two's complement of
//! the 8-bit sum of the bytes, so that the sum of the bytes and the checksum is 0.

/// The CRC's generator polynomial (x^16 + x^12 + x^5 + 1), MSB first.
pub const CRC16_POLY: u16 = 0x1021;

/// The CRC's initial value: AUG-CCITT's, i.e. CCITT's 0xFFFF after two zero bytes.
pub const CRC16_INIT: u16 = 0x1D0F;

/// One entry per value of the top byte: the remainder it leaves. Built at compile time so the
/// table costs nothing at start-up and can't be wrong at run time in a way tests didn't see.
const CRC16_TABLE: [u16; 256] = make_table();

const fn make_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        // `i < 256`, so the cast is lossless.
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ CRC16_POLY
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

/// CRC-16/AUG-CCITT of `bytes` (the frame from SOM to the last byte before the CRC).
pub fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(CRC16_INIT, |crc, &byte| {
        // The index is masked to one byte, so it is always within the 256-entry table.
        let index = usize::from(((crc >> 8) ^ u16::from(byte)) & 0xFF);
        (crc << 8) ^ CRC16_TABLE[index]
    })
}

/// The 8-bit checksum of `bytes`: the two's complement of their sum modulo 256.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, &byte| sum.wrapping_add(byte))
        .wrapping_neg()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook bit-at-a-time form, to check the table against.
    fn crc16_bitwise(bytes: &[u8]) -> u16 {
        let mut crc = CRC16_INIT;
        for &byte in bytes {
            crc ^= u16::from(byte) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ CRC16_POLY
                } else {
                    crc << 1
                };
            }
        }
        crc
    }

    #[test]
    fn poll_and_ack_known_frames() {
        // Spec: POLL seq 0 to address 0 is `FF 53 00 08 00 04 60 EB AA` (CRC after the mark).
        assert_eq!(crc16(&[0x53, 0x00, 0x08, 0x00, 0x04, 0x60]), 0xAAEB);
        // Its ACK is `53 80 08 00 04 40 59 AC`.
        assert_eq!(crc16(&[0x53, 0x80, 0x08, 0x00, 0x04, 0x40]), 0xAC59);
    }

    #[test]
    fn standard_check_value() {
        // CRC-16/AUG-CCITT's catalogued check value for "123456789".
        assert_eq!(crc16(b"123456789"), 0xE5CC);
        assert_eq!(crc16(&[]), CRC16_INIT);
    }

    #[test]
    fn table_matches_bitwise() {
        let mut data = Vec::new();
        for i in 0..600u32 {
            data.push((i.wrapping_mul(2_654_435_761) >> 13) as u8);
            assert_eq!(crc16(&data), crc16_bitwise(&data));
        }
    }

    #[test]
    fn checksum_makes_the_sum_zero() {
        let bytes = [0x53, 0x00, 0x07, 0x00, 0x00, 0x60];
        let c = checksum(&bytes);
        let total = bytes.iter().fold(c, |s, &b| s.wrapping_add(b));
        assert_eq!(total, 0);
        assert_eq!(checksum(&[]), 0);
        assert_eq!(checksum(&[0x01]), 0xFF);
        assert_eq!(checksum(&[0x80, 0x80]), 0x00);
    }
}
