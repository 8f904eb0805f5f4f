//! Quantities with units: memory (`64Mi`), CPU (`0.5` or `500m` cores) and durations (`3s`, `5m`).
//!
//! Each type parses the user's text, prints a canonical form, and (de)serializes as that text, so
//! the manifest, the JSON Schema and the API all speak the same units.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a quantity could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct QuantityError {
    /// What is wrong.
    pub message: String,
    /// What a valid value looks like.
    pub help: &'static str,
}

fn err(message: impl Into<String>, help: &'static str) -> QuantityError {
    QuantityError {
        message: message.into(),
        help,
    }
}

/// An amount of memory, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Memory(pub u64);

const MEMORY_HELP: &str = "write a whole number with a unit: `64Mi`, `512Ki`, `1Gi` (powers of 1024) or `100M`, `1G` (powers of 1000)";

impl Memory {
    /// Bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// `n` mebibytes.
    pub const fn mib(n: u64) -> Self {
        Memory(n * 1024 * 1024)
    }
}

impl FromStr for Memory {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        if digits.is_empty() {
            return Err(err(
                format!("`{s}` is not an amount of memory"),
                MEMORY_HELP,
            ));
        }
        let factor: u64 = match unit {
            "" => 1,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            "Ti" => 1 << 40,
            "k" | "K" => 1_000,
            "M" => 1_000_000,
            "G" => 1_000_000_000,
            "T" => 1_000_000_000_000,
            "MB" | "mb" | "MiB" | "Mb" | "m" => {
                return Err(err(
                    format!("`{unit}` is not a memory unit"),
                    "did you mean `Mi`? Units are `Ki`, `Mi`, `Gi`, `Ti` (1024-based) or `k`, `M`, `G`, `T`",
                ));
            }
            _ => {
                return Err(err(format!("`{unit}` is not a memory unit"), MEMORY_HELP));
            }
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| err(format!("`{s}` is too large"), MEMORY_HELP))?;
        n.checked_mul(factor)
            .map(Memory)
            .ok_or_else(|| err(format!("`{s}` is too large"), MEMORY_HELP))
    }
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("Ti", 1 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ];
        for (unit, size) in UNITS {
            if self.0 >= size && self.0 % size == 0 {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// CPU, in thousandths of a core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cpu(pub u32);

const CPU_HELP: &str = "write cores as a number (`0.5`, `2`) or millicores with `m` (`500m`)";

impl Cpu {
    /// Millicores.
    pub fn millis(self) -> u32 {
        self.0
    }
}

impl FromStr for Cpu {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(m) = s.strip_suffix('m') {
            return m
                .parse::<u32>()
                .map(Cpu)
                .map_err(|_| err(format!("`{s}` is not a CPU quantity"), CPU_HELP));
        }
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        let whole_ok = !whole.is_empty() || !frac.is_empty();
        if !whole_ok
            || !whole.chars().all(|c| c.is_ascii_digit())
            || !frac.chars().all(|c| c.is_ascii_digit())
        {
            return Err(err(format!("`{s}` is not a CPU quantity"), CPU_HELP));
        }
        if frac.len() > 3 {
            return Err(err(
                format!("`{s}` is finer than a millicore"),
                "CPU is counted in thousandths of a core: use at most three decimals, or `m`",
            ));
        }
        let whole: u32 = if whole.is_empty() {
            0
        } else {
            whole
                .parse()
                .map_err(|_| err(format!("`{s}` is too large"), CPU_HELP))?
        };
        let frac_millis: u32 = format!("{frac:0<3}").parse().unwrap_or(0);
        whole
            .checked_mul(1000)
            .and_then(|w| w.checked_add(frac_millis))
            .map(Cpu)
            .ok_or_else(|| err(format!("`{s}` is too large"), CPU_HELP))
    }
}

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 % 1000 == 0 {
            write!(f, "{}", self.0 / 1000)
        } else {
            write!(f, "{}m", self.0)
        }
    }
}

/// A span of time, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub u64);

const DURATION_HELP: &str =
    "write a number with a unit: `500ms`, `3s`, `5m`, `1h`, or combined as `1m30s`";

impl Duration {
    /// Milliseconds.
    pub fn millis(self) -> u64 {
        self.0
    }

    /// As a standard duration.
    pub fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }

    /// `n` seconds.
    pub const fn secs(n: u64) -> Self {
        Duration(n * 1000)
    }
}

impl FromStr for Duration {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        if text.is_empty() {
            return Err(err("an empty duration", DURATION_HELP));
        }
        if text.chars().all(|c| c.is_ascii_digit()) {
            return Err(err(
                format!("`{text}` has no unit"),
                "add a unit: `3s` for seconds, `500ms`, `5m`, `1h`",
            ));
        }
        let mut total: u64 = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let digits_end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits_end == 0 {
                return Err(err(format!("`{text}` is not a duration"), DURATION_HELP));
            }
            let n: u64 = rest[..digits_end]
                .parse()
                .map_err(|_| err(format!("`{text}` is too long"), DURATION_HELP))?;
            rest = &rest[digits_end..];
            let unit_end = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let factor = match &rest[..unit_end] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "" => {
                    return Err(err(
                        format!("`{text}` has a number without a unit"),
                        DURATION_HELP,
                    ));
                }
                other => {
                    return Err(err(
                        format!("`{other}` is not a unit of time"),
                        DURATION_HELP,
                    ));
                }
            };
            rest = &rest[unit_end..];
            total = n
                .checked_mul(factor)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| err(format!("`{text}` is too long"), DURATION_HELP))?;
        }
        Ok(Duration(total))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0s");
        }
        let mut rest = self.0;
        for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
            if rest >= size {
                write!(f, "{}{unit}", rest / size)?;
                rest %= size;
            }
        }
        Ok(())
    }
}

/// How many failed devices a rollout stage tolerates: a count (`0`, `2`) or a percentage of
/// the stage's devices (`10%`, 0 to 100). A stage halts when its failures are *more* than this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureThreshold {
    /// At most this many devices.
    Count(u32),
    /// At most this percentage (0..=100) of the stage's devices, rounded down.
    Percent(u32),
}

const THRESHOLD_HELP: &str = "write a number of devices, `maxFailures: 0`, or a percentage of the stage's devices, `maxFailures: 10%`";

impl FailureThreshold {
    /// The most failures tolerated among `devices` devices.
    pub fn allowed(self, devices: usize) -> usize {
        match self {
            FailureThreshold::Count(n) => n as usize,
            FailureThreshold::Percent(p) => devices * p as usize / 100,
        }
    }
}

impl Default for FailureThreshold {
    fn default() -> Self {
        FailureThreshold::Count(0)
    }
}

impl FromStr for FailureThreshold {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let (digits, percent) = match text.strip_suffix('%') {
            Some(d) => (d.trim_end(), true),
            None => (text, false),
        };
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(err(
                format!("`{text}` is not a failure threshold"),
                THRESHOLD_HELP,
            ));
        }
        let n: u32 = digits
            .parse()
            .map_err(|_| err(format!("`{text}` is too large"), THRESHOLD_HELP))?;
        if percent {
            if n > 100 {
                return Err(err(
                    format!("`{text}` is more than 100%"),
                    "a percentage of the stage's devices is from `0%` to `100%`",
                ));
            }
            Ok(FailureThreshold::Percent(n))
        } else {
            Ok(FailureThreshold::Count(n))
        }
    }
}

impl fmt::Display for FailureThreshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureThreshold::Count(n) => write!(f, "{n}"),
            FailureThreshold::Percent(p) => write!(f, "{p}%"),
        }
    }
}

macro_rules! string_quantity {
    ($ty:ident, $name:literal, $schema:tt) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                #[derive(Deserialize)]
                #[serde(untagged)]
                enum Raw {
                    Text(String),
                    Number(serde_json::Number),
                }
                let text = match Raw::deserialize(d)? {
                    Raw::Text(t) => t,
                    Raw::Number(n) => n.to_string(),
                };
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

string_quantity!(Memory, "Memory", {
    "description": "An amount of memory: a whole number of bytes with a unit, `64Mi`, `512Ki`, `1Gi` (1024-based) or `100M`, `1G` (1000-based).",
    "type": "string",
    "pattern": "^[0-9]+(Ki|Mi|Gi|Ti|k|K|M|G|T)?$",
    "examples": ["64Mi", "1Gi"]
});
string_quantity!(Cpu, "Cpu", {
    "description": "CPU in cores (`0.5`, `2`) or millicores (`500m`).",
    "type": ["string", "number"],
    "pattern": "^([0-9]+m|[0-9]*\\.?[0-9]{1,3})$",
    "examples": ["0.5", "500m", 2]
});
string_quantity!(FailureThreshold, "FailureThreshold", {
    "description": "Failed devices a rollout stage tolerates: a count (`0`, `2`) or a percentage of the stage's devices (`10%`).",
    "type": ["string", "integer"],
    "pattern": "^[0-9]+%?$",
    "examples": [0, "10%"]
});
string_quantity!(Duration, "Duration", {
    "description": "A duration with units: `500ms`, `3s`, `5m`, `1h`, `1m30s`.",
    "type": "string",
    "pattern": "^([0-9]+(ms|s|m|h|d))+$",
    "examples": ["3s", "5m"]
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory() {
        assert_eq!("64Mi".parse::<Memory>().unwrap(), Memory(64 << 20));
        assert_eq!("1G".parse::<Memory>().unwrap(), Memory(1_000_000_000));
        assert_eq!("4096".parse::<Memory>().unwrap(), Memory(4096));
        assert!("64MB".parse::<Memory>().unwrap_err().help.contains("Mi"));
        assert!("Mi".parse::<Memory>().is_err());
        assert!("1.5Gi".parse::<Memory>().is_err());
        assert!("99999999999999Ti".parse::<Memory>().is_err());
        assert_eq!(Memory(64 << 20).to_string(), "64Mi");
        assert_eq!(Memory(1000).to_string(), "1000");
    }

    #[test]
    fn cpu() {
        assert_eq!("0.5".parse::<Cpu>().unwrap(), Cpu(500));
        assert_eq!("500m".parse::<Cpu>().unwrap(), Cpu(500));
        assert_eq!("2".parse::<Cpu>().unwrap(), Cpu(2000));
        assert_eq!(".25".parse::<Cpu>().unwrap(), Cpu(250));
        assert_eq!("1.5".parse::<Cpu>().unwrap(), Cpu(1500));
        assert!("0.0001".parse::<Cpu>().is_err());
        assert!("half".parse::<Cpu>().is_err());
        assert!("-1".parse::<Cpu>().is_err());
        assert!(".".parse::<Cpu>().is_err());
        assert_eq!(Cpu(500).to_string(), "500m");
        assert_eq!(Cpu(2000).to_string(), "2");
    }

    #[test]
    fn duration() {
        assert_eq!("3s".parse::<Duration>().unwrap(), Duration(3000));
        assert_eq!("5m".parse::<Duration>().unwrap(), Duration(300_000));
        assert_eq!("1m30s".parse::<Duration>().unwrap(), Duration(90_000));
        assert_eq!("250ms".parse::<Duration>().unwrap(), Duration(250));
        assert!(
            "3".parse::<Duration>()
                .unwrap_err()
                .message
                .contains("no unit")
        );
        assert!("3 sec".parse::<Duration>().is_err());
        assert!("s".parse::<Duration>().is_err());
        assert_eq!(Duration(90_000).to_string(), "1m30s");
        assert_eq!(Duration(250).to_string(), "250ms");
    }

    #[test]
    fn round_trips_through_serde() {
        let m: Memory = serde_json::from_str("\"64Mi\"").unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"64Mi\"");
        let c: Cpu = serde_json::from_str("0.5").unwrap();
        assert_eq!(c, Cpu(500));
    }
}
