//! The follower's rules: fetching from its log end with its epochs and
//! fsynced offset, truncating by the diverging epoch, copying batches
//! verbatim with one fsync per answer.

use super::*;

impl Replica {
    /// The leader's answer to this follower's fetch.
    pub fn on_fetch_response(
        &mut self,
        now: u64,
        resp: FetchResponse,
        log: &Partition,
        out: &mut Vec<Envelope>,
    ) -> Result<()> {
        let Role::Follower(f) = &mut self.role else {
            return Ok(());
        };
        if f.in_flight.map(|(c, _)| c) != Some(resp.corr) {
            // A duplicate, or the answer to a fetch given up on.
            return Ok(());
        }
        f.in_flight = None;
        if resp.error.is_some() {
            let wait = f.backoff.next_delay(now ^ resp.corr.wrapping_mul(0x9E37));
            f.next_fetch = now + self.cfg.fetch_backoff_ms.max(wait);
            return Ok(());
        }
        if resp.leader_epoch != f.epoch {
            f.next_fetch = now + self.cfg.fetch_backoff_ms;
            return Ok(());
        }
        f.backoff.reset();
        if let Some((e, end)) = resp.diverging {
            // KIP-279: truncate to the end of the largest epoch we share,
            // bounded by the leader's end of it; if we did not know the
            // leader's epoch, the next fetch asks again with ours.
            let target = match log.end_offset_for_epoch(e) {
                Some((_, ours)) => ours.min(end),
                None => end.min(log.log_start_offset()),
            };
            f.next_fetch = now;
            log.truncate_to(target).map_err(self.err())?;
            self.maybe_fetch(now, log, out);
            return Ok(());
        }
        let mut appended = false;
        for b in &resp.batches {
            if b.base_offset() < log.log_end_offset() {
                continue;
            }
            match log.append_as_follower(b, false) {
                Ok(()) => appended = true,
                // Not ours to take (an epoch older than our cache, a gap):
                // the next fetch sorts it out.
                Err(LogError::InvalidBatch(_)) | Err(LogError::StaleEpoch { .. }) => break,
                Err(e) => return Err(self.err()(e)),
            }
        }
        if appended && !self.cfg.ack_unsynced {
            // One fsync per fetch: the group commit of the follower.
            log.flush().map_err(self.err())?;
        }
        let hw = resp.high_watermark.min(log.log_end_offset());
        if hw > log.high_watermark() {
            log.set_high_watermark(hw).map_err(self.err())?;
        }
        // The leader's log start (DeleteRecords, retention): what it
        // deleted goes here too, up to what this replica has committed
        // (everything below the leader's start is committed, and so the
        // same here); the rest follows as the high watermark does.
        if resp.log_start_offset > log.log_end_offset() && resp.batches.is_empty() {
            // All of this log lies before the leader's start: nothing to
            // fetch from here, so it starts over there (as Kafka's
            // follower does on OFFSET_OUT_OF_RANGE).
            log.truncate_fully_and_start_at(resp.log_start_offset)
                .map_err(self.err())?;
        } else {
            let cut = resp.log_start_offset.min(log.high_watermark());
            if cut > log.log_start_offset() {
                log.delete_records_before(cut).map_err(self.err())?;
            }
        }
        if let Role::Follower(f) = &mut self.role {
            f.next_fetch = if resp.batches.is_empty() && self.cfg.fetch_wait_max_ms == 0 {
                now + self.cfg.fetch_backoff_ms
            } else {
                now
            };
        }
        self.maybe_fetch(now, log, out);
        Ok(())
    }

    pub(super) fn maybe_fetch(&mut self, now: u64, log: &Partition, out: &mut Vec<Envelope>) {
        let legacy = self.cfg.legacy_truncate_to_hw;
        let Role::Follower(f) = &mut self.role else {
            return;
        };
        if f.in_flight.is_some() || now < f.next_fetch {
            return;
        }
        let corr = self.next_corr;
        self.next_corr += 1;
        f.in_flight = Some((corr, now + self.cfg.fetch_timeout_ms));
        let last_epoch = if legacy {
            -1
        } else {
            // The newest epoch, without copying the whole cache.
            log.latest_epoch().unwrap_or(-1)
        };
        let leo = log.log_end_offset();
        Self::send(
            out,
            Addr::Node(f.leader),
            Msg::Fetch(FetchRequest {
                corr,
                partition: self.partition,
                replica: Some((self.node, self.broker_epoch)),
                leader_epoch: f.epoch,
                fetch_offset: leo,
                last_fetched_epoch: last_epoch,
                durable_offset: log.durable_end_offset().min(leo),
                max_bytes: self.cfg.fetch_max_bytes,
            }),
        );
    }
}
