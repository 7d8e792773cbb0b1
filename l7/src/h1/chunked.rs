//! Where a chunked body ends (RFC 9112 §7.1), found while its bytes are relayed
//! unchanged: a strict scanner that keeps only its place, never the data.

/// Longest chunk extension accepted per chunk (hyper allows 16 KiB per message).
const MAX_EXTENSION: u32 = 4096;
/// Longest trailer section accepted.
const MAX_TRAILERS: u32 = 16 * 1024;

/// A chunked body fulcrum will not relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("invalid chunk size")]
    Size,
    #[error("chunk size too large")]
    TooLarge,
    #[error("invalid or too long chunk extension")]
    Extension,
    #[error("chunk data not followed by CRLF")]
    DataEnd,
    #[error("invalid or too long trailer section")]
    Trailers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first hex digit of a size.
    SizeStart,
    Size,
    Extension,
    /// After the CR that ends a size line.
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    Trailer,
    TrailerLf,
    /// After the CR of the empty line that ends the message.
    EndLf,
    Done,
}

/// The scanner's place in one chunked body.
#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
    /// Data left in the current chunk, or the size being read.
    size: u64,
    extension: u32,
    trailers: u32,
    /// Data bytes seen so far (the decoded body's length).
    data: u64,
}

impl Default for Chunked {
    fn default() -> Self {
        Self::new()
    }
}

impl Chunked {
    pub fn new() -> Self {
        Chunked {
            state: State::SizeStart,
            size: 0,
            extension: 0,
            trailers: 0,
            data: 0,
        }
    }

    /// Data bytes seen so far: the length the body decodes to.
    pub fn data_len(&self) -> u64 {
        self.data
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Scans the next bytes of the body. `Some(n)`: the body ends after the first
    /// `n` of them (the rest is the next message); `None`: all of them belong to
    /// it and it goes on.
    pub fn scan(&mut self, input: &[u8]) -> Result<Option<usize>, ChunkError> {
        self.scan_with(input, |_| {})
    }

    /// As [`Chunked::scan`], also handing `data` where each run of chunk data lies
    /// in `input` (to decode the body rather than relay it).
    pub fn scan_with(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(std::ops::Range<usize>),
    ) -> Result<Option<usize>, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Data {
                // The bulk of a body: skipped, not looked at.
                let left = input.len() - i;
                let take = usize::try_from(self.size).map_or(left, |s| s.min(left));
                data(i..i + take);
                i += take;
                self.size -= take as u64;
                self.data += take as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            self.step(input[i])?;
            i += 1;
            if self.state == State::Done {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        self.state = match (self.state, b) {
            (State::SizeStart | State::Size, _) if b.is_ascii_hexdigit() => {
                if self.size >> 60 != 0 {
                    return Err(ChunkError::TooLarge);
                }
                self.size = self.size << 4 | u64::from(hex(b));
                State::Size
            }
            (State::Size, b';') => {
                self.extension = 0;
                State::Extension
            }
            (State::Size | State::Extension, b'\r') => State::SizeLf,
            (State::SizeStart | State::Size, _) => return Err(ChunkError::Size),
            (State::Extension, _) => {
                self.extension += 1;
                if self.extension > MAX_EXTENSION || !field_byte(b) {
                    return Err(ChunkError::Extension);
                }
                State::Extension
            }
            (State::SizeLf, b'\n') if self.size == 0 => State::TrailerStart,
            (State::SizeLf, b'\n') => State::Data,
            (State::SizeLf, _) => return Err(ChunkError::Size),
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => State::SizeStart,
            (State::DataCr | State::DataLf, _) => return Err(ChunkError::DataEnd),
            (State::TrailerStart, b'\r') => State::EndLf,
            (State::EndLf, b'\n') => State::Done,
            (State::TrailerStart | State::Trailer, _) => {
                self.trailers += 1;
                if self.trailers > MAX_TRAILERS {
                    return Err(ChunkError::Trailers);
                }
                match b {
                    b'\r' => State::TrailerLf,
                    _ if field_byte(b) => State::Trailer,
                    _ => return Err(ChunkError::Trailers),
                }
            }
            (State::TrailerLf, b'\n') => State::TrailerStart,
            (State::TrailerLf | State::EndLf, _) => return Err(ChunkError::Trailers),
            // Data is skipped in bulk by `scan`, and nothing follows Done.
            (State::Data | State::Done, _) => self.state,
        };
        Ok(())
    }
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// A byte of a field line or extension: visible, space, tab or obs-text; no CR,
/// LF or other control (RFC 9110 §5.5).
fn field_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans `body` whole and split at every byte boundary; all must agree.
    fn end_of(body: &[u8]) -> Result<Option<usize>, ChunkError> {
        let whole = Chunked::new().scan(body);
        for cut in 0..=body.len() {
            let mut c = Chunked::new();
            let split = match c.scan(&body[..cut]) {
                Ok(None) => c.scan(&body[cut..]).map(|end| end.map(|n| n + cut)),
                other => other,
            };
            assert_eq!(split, whole, "split at {cut} of {body:?}");
        }
        whole
    }

    #[test]
    fn finds_the_end_of_a_body_split_anywhere() {
        let body = b"5;name=value\r\nhello\r\nA\r\n0123456789\r\n0\r\nx-sum: 1\r\n\r\nGET /next";
        assert_eq!(end_of(body), Ok(Some(body.len() - 9)));
        let mut c = Chunked::new();
        assert_eq!(c.scan(b"5\r\nhello\r\n0\r\n\r\n"), Ok(Some(15)));
        assert_eq!(c.data_len(), 5);
        assert_eq!(end_of(b"5\r\nhel"), Ok(None));
        assert_eq!(end_of(b"0\r\n\r\n"), Ok(Some(5)));
    }

    #[test]
    fn refuses_what_peers_could_read_differently() {
        for (bad, want) in [
            (&b"5\nhello\r\n0\r\n\r\n"[..], ChunkError::Size),
            (b"\r\n", ChunkError::Size),
            (b"-5\r\n", ChunkError::Size),
            (b"5 \r\n", ChunkError::Size),
            (b"0x5\r\n", ChunkError::Size),
            (b"5\r\nhelloX\r\n", ChunkError::DataEnd),
            (b"5\r\nhello\n0\r\n\r\n", ChunkError::DataEnd),
            (b"11111111111111111\r\n", ChunkError::TooLarge),
            (b"5;a\nb\r\n", ChunkError::Extension),
            (b"0\r\nx: 1\n\r\n", ChunkError::Trailers),
            (b"0\r\n\n", ChunkError::Trailers),
            (b"0\r\n\r\r", ChunkError::Trailers),
        ] {
            assert_eq!(end_of(bad), Err(want), "{:?}", String::from_utf8_lossy(bad));
        }
        let long = format!("1;{}\r\n", "e".repeat(5000));
        assert_eq!(end_of(long.as_bytes()), Err(ChunkError::Extension));
    }
}
