//! The `Range` request header (RFC 9110 §14), so large downloads resume.
//! One byte range is served; a header with several is answered with the
//! whole file (RFC 9110 lets a server ignore `Range`), as is one it cannot
//! parse or whose unit is not `bytes`.

/// The range can be satisfied by no byte of the file: answer 416 with
/// `Content-Range: bytes */{size}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("range not satisfiable: the file has {size} bytes")]
pub struct RangeError {
    pub size: u64,
}

/// The first and last byte (inclusive) of the one range asked for, `None`
/// for the whole file.
pub fn parse_range(header: &str, size: u64) -> Result<Option<(u64, u64)>, RangeError> {
    let Some((unit, set)) = header.trim().split_once('=') else {
        return Ok(None);
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return Ok(None);
    };
    let unsatisfiable = Err(RangeError { size });
    match (number(first), number(last)) {
        // `bytes=-n`: the last n bytes.
        (None, Some(n)) if first.is_empty() => {
            if n == 0 {
                unsatisfiable
            } else if size == 0 {
                Ok(None)
            } else {
                Ok(Some((size.saturating_sub(n), size - 1)))
            }
        }
        // `bytes=a-`
        (Some(a), None) if last.is_empty() => {
            if a >= size {
                unsatisfiable
            } else {
                Ok(Some((a, size - 1)))
            }
        }
        // `bytes=a-b`
        (Some(a), Some(b)) if a <= b => {
            if a >= size {
                unsatisfiable
            } else {
                Ok(Some((a, b.min(size - 1))))
            }
        }
        _ => Ok(None),
    }
}

/// Digits only; too large a number saturates (it lies past any file).
fn number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        let bad = Err(RangeError { size: 1000 });
        type Want = Result<Option<(u64, u64)>, RangeError>;
        let table: &[(&str, u64, Want)] = &[
            ("bytes=0-499", 1000, Ok(Some((0, 499)))),
            ("bytes=500-999", 1000, Ok(Some((500, 999)))),
            ("bytes=500-5000", 1000, Ok(Some((500, 999)))),
            ("bytes=500-", 1000, Ok(Some((500, 999)))),
            ("bytes=-200", 1000, Ok(Some((800, 999)))),
            ("bytes=-5000", 1000, Ok(Some((0, 999)))),
            ("BYTES=0-0", 1000, Ok(Some((0, 0)))),
            ("bytes = 1-2", 1000, Ok(Some((1, 2)))),
            ("bytes=999-999", 1000, Ok(Some((999, 999)))),
            ("bytes=1000-", 1000, bad.clone()),
            ("bytes=1000-2000", 1000, bad.clone()),
            ("bytes=-0", 1000, bad.clone()),
            ("bytes=99999999999999999999999-", 1000, bad),
            ("bytes=0-", 0, Err(RangeError { size: 0 })),
            ("bytes=-5", 0, Ok(None)),
            // Ignored: answered with the whole file.
            ("bytes=0-1,5-6", 1000, Ok(None)),
            ("bytes=5-1", 1000, Ok(None)),
            ("bytes=-", 1000, Ok(None)),
            ("bytes=a-b", 1000, Ok(None)),
            ("bytes=+1-2", 1000, Ok(None)),
            ("items=0-1", 1000, Ok(None)),
            ("garbage", 1000, Ok(None)),
            ("", 1000, Ok(None)),
        ];
        for (header, size, want) in table {
            assert_eq!(&parse_range(header, *size), want, "{header:?} of {size}");
        }
    }
}
