//! Durations as the configuration writes them: `"30s"`, `"5m"`, `"1h"`, `"2d"`.
//!
//! A bare number is refused on purpose: `"retry": [120]` is ambiguous (seconds?
//! milliseconds?) and mail operators have been bitten by that before.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration as StdDuration;

/// A configuration duration; keeps the text it was written as for `--print`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub StdDuration);

impl Duration {
    pub const fn secs(s: u64) -> Self {
        Duration(StdDuration::from_secs(s))
    }
    pub fn as_std(&self) -> StdDuration {
        self.0
    }
}

/// Parses `"<integer><unit>"` with units ms, s, m, h, d, w.
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "invalid duration '{text}': expected a number followed by a unit, e.g. \"30s\", \"5m\", \"1h\", \"2d\""
        ));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration '{text}': number too large"))?;
    let millis_per = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        "" => {
            return Err(format!(
                "invalid duration '{text}': missing unit (ms, s, m, h, d or w)"
            ))
        }
        other => {
            return Err(format!(
                "invalid duration '{text}': unknown unit '{other}' (use ms, s, m, h, d or w)"
            ))
        }
    };
    let millis = n
        .checked_mul(millis_per)
        .ok_or_else(|| format!("invalid duration '{text}': too large"))?;
    Ok(Duration(StdDuration::from_millis(millis)))
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        let units = [
            (604_800_000, "w"),
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1_000, "s"),
        ];
        for (size, unit) in units {
            if ms != 0 && ms % size == 0 {
                return write!(f, "{}{}", ms / size, unit);
            }
        }
        if ms == 0 {
            write!(f, "0s")
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration string such as \"30s\", \"5m\", \"1h\" or \"2d\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse("30s").unwrap().0, StdDuration::from_secs(30));
        assert_eq!(parse("5m").unwrap().0, StdDuration::from_secs(300));
        assert_eq!(parse("1h").unwrap().0, StdDuration::from_secs(3600));
        assert_eq!(parse("2d").unwrap().0, StdDuration::from_secs(172_800));
        assert_eq!(parse("1w").unwrap().0, StdDuration::from_secs(604_800));
        assert_eq!(parse("250ms").unwrap().0, StdDuration::from_millis(250));
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for bad in ["", "s", "10", "10x", "1.5h", "-3s", "99999999999999999999s"] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn displays_in_the_largest_exact_unit() {
        for text in ["30s", "5m", "1h", "2d", "1w", "90s", "250ms", "0s"] {
            assert_eq!(parse(text).unwrap().to_string(), text);
        }
    }
}
