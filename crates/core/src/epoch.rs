//! Epochs: fixed-length windows of event time, the unit of expiry.
//!
//! Every update lands in the epoch containing its timestamp. Storage keeps each
//! epoch separately, so dropping realtime data older than a batch boundary is
//! dropping whole epochs (O(1) in the number of keys), never per-key deletes.

/// Index of an epoch: `floor(ts_secs / epoch_secs)` for the view's epoch length.
///
/// Ordered like the time it covers. Only meaningful together with the epoch
/// length it was computed with; epoch 0 starts at the Unix epoch.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Epoch(pub u64);

/// Why no epoch contains a timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EpochError {
    /// Event times before 1970 are refused rather than wrapped.
    #[error("timestamp is before the Unix epoch")]
    NegativeTimestamp,
    /// An epoch length of zero seconds contains nothing.
    #[error("epoch length must be at least one second")]
    ZeroLength,
}

impl Epoch {
    /// The epoch of length `epoch_secs` containing the event time `ts_us`
    /// (microseconds since the Unix epoch).
    pub fn containing(ts_us: i64, epoch_secs: u64) -> Result<Epoch, EpochError> {
        if epoch_secs == 0 {
            return Err(EpochError::ZeroLength);
        }
        let ts_us = u64::try_from(ts_us).map_err(|_| EpochError::NegativeTimestamp)?;
        Ok(Epoch(ts_us / 1_000_000 / epoch_secs))
    }

    /// First second (since the Unix epoch) this epoch covers; saturates at
    /// `u64::MAX` instead of overflowing.
    pub fn start_secs(self, epoch_secs: u64) -> u64 {
        self.0.saturating_mul(epoch_secs)
    }

    /// First microsecond this epoch covers, as an event timestamp: an update with this
    /// `ts` lands in this epoch (how merges name their epoch). Saturates at `i64::MAX`.
    pub fn start_us(self, epoch_secs: u64) -> i64 {
        i64::try_from(self.start_secs(epoch_secs).saturating_mul(1_000_000)).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containing_floors_to_the_epoch_start() {
        let hour = 3600;
        assert_eq!(Epoch::containing(0, hour), Ok(Epoch(0)));
        assert_eq!(Epoch::containing(3_599_999_999, hour), Ok(Epoch(0)));
        assert_eq!(Epoch::containing(3_600_000_000, hour), Ok(Epoch(1)));
        let e = Epoch::containing(1_732_450_000_000_000, hour).unwrap();
        assert!(e.start_secs(hour) <= 1_732_450_000);
        assert!(e.start_secs(hour) + hour > 1_732_450_000);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert_eq!(
            Epoch::containing(-1, 60),
            Err(EpochError::NegativeTimestamp)
        );
        assert_eq!(Epoch::containing(1, 0), Err(EpochError::ZeroLength));
        assert_eq!(Epoch(u64::MAX).start_secs(2), u64::MAX);
        assert_eq!(
            Epoch::containing(i64::MAX, 1),
            Ok(Epoch(i64::MAX as u64 / 1_000_000))
        );
    }
}
