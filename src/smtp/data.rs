//! Decoding the DATA stream: dot-unstuffing, the end marker, line endings.
//!
//! The end of data is only `<CRLF>.<CRLF>`. A bare LF is accepted as a line
//! ending and stored as CRLF, but `<LF>.<LF>`, `<LF>.<CRLF>` and
//! `<CRLF>.<LF>` never end the data: treating them as the end is what SMTP
//! smuggling exploits (a second message hidden in the first, relayed by an
//! MTA that reads the end differently). This is Postfix's
//! `smtpd_forbid_bare_newline = normalize`.

/// Incremental decoder; feed it bytes as they arrive.
pub struct DataDecoder {
    out: Vec<u8>,
    max: usize,
    /// The client's data exceeded `max`; the rest is read and dropped.
    pub oversize: bool,
    at_line_start: bool,
    /// The previous line ended with CRLF (or this is the first line).
    prev_crlf: bool,
    seen: usize,
}

pub enum Progress {
    /// Needs more bytes.
    More,
    /// The end marker was found; the bytes after it were not consumed.
    Done,
}

impl DataDecoder {
    pub fn new(max: usize) -> Self {
        DataDecoder {
            out: Vec::with_capacity(8192.min(max)),
            max,
            oversize: false,
            at_line_start: true,
            prev_crlf: true,
            seen: 0,
        }
    }

    /// Consumes what it can of `buf` (drained from the front).
    pub fn feed(&mut self, buf: &mut Vec<u8>) -> Progress {
        let mut pos = 0;
        let progress = loop {
            let rest = &buf[pos..];
            if self.at_line_start {
                if rest.starts_with(b".\r\n") && self.prev_crlf {
                    pos += 3;
                    break Progress::Done;
                }
                if rest.is_empty() || (rest.len() < 3 && b".\r\n".starts_with(rest)) {
                    break Progress::More;
                }
                if rest[0] == b'.' {
                    pos += 1; // dot-stuffing: drop the first dot
                    self.at_line_start = false;
                    continue;
                }
            }
            match rest.iter().position(|b| *b == b'\n') {
                Some(lf) => {
                    let crlf = lf > 0 && rest[lf - 1] == b'\r';
                    let content = if crlf { &rest[..lf - 1] } else { &rest[..lf] };
                    self.push(content);
                    self.push(b"\r\n");
                    pos += lf + 1;
                    self.at_line_start = true;
                    self.prev_crlf = crlf;
                }
                None => {
                    // Keep a trailing CR: it may be the first half of CRLF.
                    let keep = usize::from(rest.last() == Some(&b'\r'));
                    let take = rest.len() - keep;
                    if take > 0 {
                        let chunk = &rest[..take];
                        self.push(chunk);
                        pos += take;
                        self.at_line_start = false;
                    }
                    break Progress::More;
                }
            }
        };
        buf.drain(..pos);
        progress
    }

    fn push(&mut self, bytes: &[u8]) {
        self.seen += bytes.len();
        if self.seen > self.max {
            self.oversize = true;
            self.out.clear();
            self.out.shrink_to_fit();
        } else {
            self.out.extend_from_slice(bytes);
        }
    }

    pub fn into_message(self) -> Vec<u8> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(chunks: &[&[u8]]) -> (Option<Vec<u8>>, Vec<u8>) {
        let mut d = DataDecoder::new(1 << 20);
        let mut buf = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            if let Progress::Done = d.feed(&mut buf) {
                return (Some(d.into_message()), buf);
            }
        }
        (None, buf)
    }

    #[test]
    fn unstuffs_and_stops_at_crlf_dot_crlf() {
        let (m, rest) = decode(&[b"a\r\n..b\r\n.\r\nQUIT\r\n"]);
        assert_eq!(m.unwrap(), b"a\r\n.b\r\n");
        assert_eq!(rest, b"QUIT\r\n");
    }

    #[test]
    fn bare_lf_dot_never_ends_the_data() {
        let (m, _) = decode(&[b"a\n.\nMAIL FROM:<x@y>\r\n.\r\n"]);
        assert_eq!(m.unwrap(), b"a\r\n\r\nMAIL FROM:<x@y>\r\n");
        let (m, _) = decode(&[b"a\r\n.\nb\r\n.\r\n"]);
        assert_eq!(m.unwrap(), b"a\r\n\r\nb\r\n");
        let (m, _) = decode(&[b"a\n.\r\nb\r\n.\r\n"]);
        assert_eq!(m.unwrap(), b"a\r\n\r\nb\r\n");
    }

    #[test]
    fn the_marker_may_arrive_split_anywhere() {
        let whole = b"line one\r\n.dot\r\n.\r\n";
        for cut in 0..whole.len() {
            let (m, _) = decode(&[&whole[..cut], &whole[cut..]]);
            assert_eq!(m.unwrap(), b"line one\r\ndot\r\n", "cut at {cut}");
        }
    }

    #[test]
    fn an_empty_message_is_just_the_marker() {
        let (m, _) = decode(&[b".\r\n"]);
        assert_eq!(m.unwrap(), b"");
    }

    #[test]
    fn oversize_is_flagged_and_still_finds_the_end() {
        let mut d = DataDecoder::new(10);
        let mut buf = b"0123456789abcdef\r\n.\r\n".to_vec();
        assert!(matches!(d.feed(&mut buf), Progress::Done));
        assert!(d.oversize);
    }
}
