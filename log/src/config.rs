//! Topic configuration, with Kafka's names and defaults. Stored in the
//! metadata store as `name=value` lines.

use crate::{Error, Result};

/// What happens to old data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CleanupPolicy {
    /// Whole segments are deleted by retention time and size.
    Delete,
    /// The cleaner keeps the latest record per key (and tombstones for
    /// `delete_retention_ms`); offsets are preserved.
    Compact,
}

/// A topic's log settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: roll the active segment at this size.
    pub segment_bytes: u64,
    /// `segment.ms`: roll the active segment once its first batch is this
    /// old (by its timestamp).
    pub segment_ms: Option<i64>,
    /// `index.interval.bytes`: log bytes between offset index entries.
    pub index_interval_bytes: u64,
    /// `segment.index.bytes`: largest index; a full index rolls.
    pub segment_index_bytes: u64,
    /// `retention.bytes`: delete old segments beyond this total (`None`:
    /// no limit).
    pub retention_bytes: Option<u64>,
    /// `retention.ms`: delete segments whose newest record is older
    /// (`None`: keep forever).
    pub retention_ms: Option<i64>,
    /// `cleanup.policy`.
    pub cleanup_policy: CleanupPolicy,
    /// `delete.retention.ms`: how long the cleaner keeps tombstones.
    pub delete_retention_ms: i64,
    /// `flush.messages=1` in Kafka terms: fsync every append.
    pub flush_every_append: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: Some(7 * 24 * 3600 * 1000),
            index_interval_bytes: 4096,
            segment_index_bytes: 10 << 20,
            retention_bytes: None,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            cleanup_policy: CleanupPolicy::Delete,
            delete_retention_ms: 24 * 3600 * 1000,
            flush_every_append: false,
        }
    }
}

fn opt_i64(v: Option<i64>) -> String {
    v.map_or("-1".into(), |v| v.to_string())
}

impl LogConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidArgument(m.into()));
        if self.segment_bytes < 1024 {
            return bad("segment.bytes must be at least 1024");
        }
        if self.segment_bytes > u64::from(u32::MAX) {
            // Index positions are u32.
            return bad("segment.bytes must fit in 32 bits");
        }
        if self.index_interval_bytes == 0 {
            return bad("index.interval.bytes must be positive");
        }
        if self.segment_index_bytes < 64 {
            return bad("segment.index.bytes must be at least 64");
        }
        if self.segment_ms.is_some_and(|v| v <= 0) || self.retention_ms.is_some_and(|v| v <= 0) {
            return bad("segment.ms and retention.ms must be positive (or -1 for none)");
        }
        if self.delete_retention_ms < 0 {
            return bad("delete.retention.ms must not be negative");
        }
        Ok(())
    }

    /// `name=value` lines.
    pub fn encode(&self) -> String {
        format!(
            "segment.bytes={}\nsegment.ms={}\nindex.interval.bytes={}\nsegment.index.bytes={}\nretention.bytes={}\nretention.ms={}\ncleanup.policy={}\ndelete.retention.ms={}\nflush.messages={}\n",
            self.segment_bytes,
            opt_i64(self.segment_ms),
            self.index_interval_bytes,
            self.segment_index_bytes,
            self.retention_bytes.map_or("-1".into(), |v| v.to_string()),
            opt_i64(self.retention_ms),
            match self.cleanup_policy {
                CleanupPolicy::Delete => "delete",
                CleanupPolicy::Compact => "compact",
            },
            self.delete_retention_ms,
            if self.flush_every_append { 1 } else { 0 },
        )
    }

    /// Sets one setting by its Kafka name.
    pub fn set(&mut self, name: &str, value: &str) -> Result<()> {
        let bad = || Error::InvalidArgument(format!("{name}={value}: not a valid value"));
        let int = || value.trim().parse::<i64>().map_err(|_| bad());
        let opt = |v: i64| if v < 0 { None } else { Some(v) };
        match name {
            "segment.bytes" => self.segment_bytes = u64::try_from(int()?).map_err(|_| bad())?,
            "segment.ms" => self.segment_ms = opt(int()?),
            "index.interval.bytes" => {
                self.index_interval_bytes = u64::try_from(int()?).map_err(|_| bad())?
            }
            "segment.index.bytes" => {
                self.segment_index_bytes = u64::try_from(int()?).map_err(|_| bad())?
            }
            "retention.bytes" => self.retention_bytes = opt(int()?).map(|v| v as u64),
            "retention.ms" => self.retention_ms = opt(int()?),
            "cleanup.policy" => {
                self.cleanup_policy = match value.trim() {
                    "delete" => CleanupPolicy::Delete,
                    "compact" => CleanupPolicy::Compact,
                    _ => return Err(bad()),
                }
            }
            "delete.retention.ms" => self.delete_retention_ms = int()?,
            "flush.messages" => self.flush_every_append = int()? == 1,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "unknown topic setting {name}"
                )))
            }
        }
        Ok(())
    }

    /// Parses `name=value` lines (unknown names and bad values are errors).
    pub fn decode(text: &str) -> Result<LogConfig> {
        let mut c = LogConfig::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| Error::InvalidArgument(format!("topic setting {line:?}: no '='")))?;
            c.set(k.trim(), v)?;
        }
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_bad_settings() {
        let c = LogConfig {
            retention_bytes: Some(5000),
            cleanup_policy: CleanupPolicy::Compact,
            segment_ms: None,
            ..LogConfig::default()
        };
        assert_eq!(LogConfig::decode(&c.encode()).expect("decode"), c);
        assert!(LogConfig::decode("segment.bytes=abc").is_err());
        assert!(LogConfig::decode("nope=1").is_err());
        assert!(LogConfig::decode("segment.bytes=10").is_err());
        assert!(LogConfig::decode("cleanup.policy=shred").is_err());
    }
}
