//! The leader-epoch cache: (epoch, start offset), ascending, a fence that
//! never goes back.

use super::*;

impl Partition {
    /// Records that `epoch` starts at the log end (a new leader does this
    /// before appending). Assigning the newest epoch again does nothing;
    /// an older one is refused ([`Error::StaleEpoch`]): epochs are fencing
    /// tokens and never go back.
    pub fn assign_epoch(&self, epoch: i32) -> Result<()> {
        let mut st = self.state.write();
        let leo = st.leo();
        Self::check_epoch(&st, epoch)?;
        if st.epochs.last().is_some_and(|&(e, _)| epoch == e) {
            return Ok(());
        }
        self.meta
            .put_u64(&self.key(&format!("epoch/{epoch:010}")), leo, true)?;
        st.epochs.push((epoch, leo));
        Ok(())
    }

    /// Refuses a leader epoch older than the newest in the cache (a batch
    /// from a deposed leader, or a cache that would go back). Negative
    /// epochs mean "none" (clients' own batches) and pass.
    pub(super) fn check_epoch(st: &State, epoch: i32) -> Result<()> {
        match st.epochs.last() {
            Some(&(latest, _)) if epoch >= 0 && epoch < latest => {
                Err(Error::StaleEpoch { epoch, latest })
            }
            _ => Ok(()),
        }
    }

    /// The newest epoch in the cache, without copying it (`None`: empty).
    pub fn latest_epoch(&self) -> Option<i32> {
        self.state.read().epochs.last().map(|&(e, _)| e)
    }

    /// The leader-epoch cache: (epoch, start offset), ascending.
    pub fn epochs(&self) -> Vec<(i32, u64)> {
        self.state.read().epochs.clone()
    }

    /// Kafka's OffsetsForLeaderEpoch: the end offset of `epoch` (the start
    /// of the next larger epoch, or the log end for the latest), and the
    /// largest epoch at or below the one asked for.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, u64)> {
        let st = self.state.read();
        let i = st.epochs.iter().rposition(|&(e, _)| e <= epoch)?;
        let end = st.epochs.get(i + 1).map_or(st.leo(), |&(_, s)| s);
        Some((st.epochs[i].0, end))
    }
}
