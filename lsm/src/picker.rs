//! Compaction policies, without I/O: given the shape of the tree (files
//! per level with sizes, key ranges and whether a running compaction owns
//! them) a picker chooses the next compaction. Two policies sit behind one
//! trait, as RocksDB keeps one picker per style; the merge machinery
//! ([`crate::compaction`]) and the engine's compaction threads are shared.
//!
//! * Leveled: L0 collects flushed tables; each deeper level holds
//!   non-overlapping tables and may be `ratio` times larger than the one
//!   above. With dynamic sizing (RocksDB's
//!   `level_compaction_dynamic_level_bytes`) the targets are derived from
//!   the largest level downwards and L0 compacts straight into the first
//!   level whose target reaches `base_bytes`, so a small database has few
//!   levels and little rewriting. The level furthest over its target (or
//!   L0 at `l0_trigger` files) goes first; in a deeper level the file with
//!   the least overlap in the next level per byte goes first (RocksDB's
//!   `kMinOverlappingRatio`). Write amplification about `ratio` per level,
//!   low read and space amplification.
//! * Tiered (universal): every L0 table and every deeper level is a sorted
//!   run. Runs of similar size are merged together (size-ratio trigger);
//!   when the runs above the oldest outweigh it by `max_space_amp_percent`,
//!   everything is merged. Less rewriting than leveled (lower write
//!   amplification), at the price of more runs to read and more space.
//!
//! Files that a running compaction owns are `busy`: a leveled task never
//! takes one, so compactions of disjoint key ranges run side by side.
//! Tiered tasks take the newest runs whole; the engine runs one at a time.

/// One table, as a picker sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    /// File number.
    pub number: u64,
    /// Bytes.
    pub size: u64,
    /// Smallest user key.
    pub smallest: Vec<u8>,
    /// Largest user key.
    pub largest: Vec<u8>,
    /// A running compaction owns it.
    pub busy: bool,
}

impl FileInfo {
    fn overlaps(&self, lo: &[u8], hi: &[u8]) -> bool {
        self.smallest.as_slice() <= hi && self.largest.as_slice() >= lo
    }
}

/// The tree: `levels[0]` newest first (may overlap); deeper levels sorted
/// by key and non-overlapping.
#[derive(Clone, Debug, Default)]
pub struct TreeShape {
    /// Files per level.
    pub levels: Vec<Vec<FileInfo>>,
}

impl TreeShape {
    /// Bytes in level `l`.
    pub fn level_bytes(&self, l: usize) -> u64 {
        self.levels
            .get(l)
            .map_or(0, |fs| fs.iter().map(|f| f.size).sum())
    }

    fn overlapping(&self, level: usize, lo: &[u8], hi: &[u8]) -> Vec<&FileInfo> {
        self.levels
            .get(level)
            .map(|fs| fs.iter().filter(|f| f.overlaps(lo, hi)).collect())
            .unwrap_or_default()
    }

    /// Whether no level below `level` holds keys in `[lo, hi]`: a
    /// compaction writing to `level` is then the bottom for those keys.
    fn is_bottom(&self, level: usize, lo: &[u8], hi: &[u8]) -> bool {
        (level + 1..self.levels.len()).all(|l| self.overlapping(l, lo, hi).is_empty())
    }
}

/// A chosen compaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    /// Files to merge, by level.
    pub inputs: Vec<(usize, Vec<u64>)>,
    /// Where the output goes.
    pub output_level: usize,
    /// Whether nothing older lies below: tombstones may be dropped.
    pub bottom: bool,
    /// Why it was picked, for logs and statistics.
    pub reason: String,
}

/// A compaction policy.
pub trait Picker: Send + Sync {
    /// The next compaction, or `None` when the tree is in shape (or every
    /// candidate is busy).
    fn pick(&self, tree: &TreeShape) -> Option<Task>;

    /// Bytes the picker would still have to rewrite to bring the tree into
    /// shape, roughly (RocksDB's "estimated pending compaction bytes"):
    /// what write stalls watch.
    fn pending_bytes(&self, tree: &TreeShape) -> u64;

    /// Whether an automatic compaction may start while `running` others
    /// run. Leveled compactions of disjoint files can run side by side.
    fn may_start(&self, running: usize) -> bool {
        let _ = running;
        true
    }

    /// Whether a manual compaction of a key range takes every table (a
    /// policy whose runs cannot be split by range) rather than the tables
    /// overlapping it.
    fn manual_takes_all(&self) -> bool {
        false
    }

    /// The level a manual compaction writes into, given the deepest level
    /// of its input tables and whether it takes every table.
    fn manual_output_level(&self, tree: &TreeShape, deepest_input: usize, all: bool) -> usize;
}

fn key_range<'a>(files: impl IntoIterator<Item = &'a FileInfo>) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut it = files.into_iter();
    let first = it.next()?;
    let (mut lo, mut hi) = (first.smallest.clone(), first.largest.clone());
    for f in it {
        if f.smallest < lo {
            lo = f.smallest.clone();
        }
        if f.largest > hi {
            hi = f.largest.clone();
        }
    }
    Some((lo, hi))
}

/// Leveled compaction.
#[derive(Clone, Debug)]
pub struct LeveledPicker {
    /// L0 files that trigger an L0 compaction. Default 4.
    pub l0_trigger: usize,
    /// Target size of the level L0 compacts into. Default 256 MiB.
    pub base_bytes: u64,
    /// Size ratio between consecutive levels. Default 10.
    pub ratio: u64,
    /// Number of levels, L0 included. Default 7.
    pub max_levels: usize,
    /// Derive level targets from the largest level (see the module note).
    /// Default true.
    pub dynamic: bool,
}

impl Default for LeveledPicker {
    fn default() -> Self {
        LeveledPicker {
            l0_trigger: 4,
            base_bytes: 256 << 20,
            ratio: 10,
            max_levels: 7,
            dynamic: true,
        }
    }
}

/// Level targets: the level L0 compacts into and each level's size limit
/// (0 for levels above that one, which should be empty).
#[derive(Clone, Debug, PartialEq)]
pub struct LevelTargets {
    /// The level L0 compacts into.
    pub base_level: usize,
    /// Byte limit per level (index 0 unused).
    pub bytes: Vec<u64>,
}

impl LeveledPicker {
    /// Each level's target size.
    pub fn targets(&self, tree: &TreeShape) -> LevelTargets {
        let n = self.max_levels.max(2);
        let ratio = self.ratio.max(2);
        let mut bytes = vec![0u64; n];
        if !self.dynamic {
            for (l, b) in bytes.iter_mut().enumerate().skip(1) {
                let exp = u32::try_from(l - 1).unwrap_or(u32::MAX);
                *b = self.base_bytes.saturating_mul(ratio.saturating_pow(exp));
            }
            return LevelTargets {
                base_level: 1,
                bytes,
            };
        }
        // RocksDB's CalculateBaseBytes: the largest level sets the scale,
        // the base level is the deepest one whose share reaches
        // `base_bytes`, and no level's target is below `base_bytes` (else
        // the tree becomes an hourglass that starves L0 compactions).
        let last = n - 1;
        let base = self.base_bytes.max(1);
        let Some(first) = (1..n).find(|&l| tree.level_bytes(l) > 0) else {
            bytes[last] = base;
            return LevelTargets {
                base_level: last,
                bytes,
            };
        };
        let largest = (1..n).map(|l| tree.level_bytes(l)).max().unwrap_or(0);
        let mut cur = largest;
        for _ in first..last {
            cur /= ratio;
        }
        let (base_level, base_size) = if cur <= base / ratio {
            // More levels hold data than the size needs.
            (first, base / ratio + 1)
        } else {
            let mut level = first;
            while level > 1 && cur > base {
                level -= 1;
                cur /= ratio;
            }
            (level, if cur > base { base } else { cur.max(1) })
        };
        let mut size = base_size;
        for (l, b) in bytes.iter_mut().enumerate().skip(base_level) {
            if l > base_level {
                size = size.saturating_mul(ratio);
            }
            *b = size.max(base);
        }
        LevelTargets { base_level, bytes }
    }

    /// Score per level, L0 to the second-to-last (>= 1 means it needs
    /// compaction). Busy files do not count: their compaction is under way.
    pub fn scores(&self, tree: &TreeShape) -> Vec<f64> {
        let targets = self.targets(tree);
        (0..self.max_levels.max(2) - 1)
            .map(|l| {
                let files = tree.levels.get(l).map(Vec::as_slice).unwrap_or_default();
                if l == 0 {
                    files.len() as f64 / self.l0_trigger.max(1) as f64
                } else {
                    let idle: u64 = files.iter().filter(|f| !f.busy).map(|f| f.size).sum();
                    match targets.bytes[l] {
                        // Above the base level: anything here moves down.
                        0 if idle > 0 => 1e9,
                        0 => 0.0,
                        t => idle as f64 / t as f64,
                    }
                }
            })
            .collect()
    }

    /// The task that compacts `level`, if no file it needs is busy.
    fn task_for(&self, tree: &TreeShape, level: usize, score: f64, base: usize) -> Option<Task> {
        let files = tree.levels.get(level)?;
        let chosen: Vec<&FileInfo> = if level == 0 {
            // L0 files overlap each other: all of them, in one compaction.
            if files.is_empty() || files.iter().any(|f| f.busy) {
                return None;
            }
            files.iter().collect()
        } else {
            // The idle file that drags the fewest next-level bytes along.
            let mut best: Option<(u128, &FileInfo)> = None;
            for f in files.iter().filter(|f| !f.busy) {
                let below = tree.overlapping(level + 1, &f.smallest, &f.largest);
                if below.iter().any(|b| b.busy) {
                    continue;
                }
                let over: u64 = below.iter().map(|b| b.size).sum();
                let ratio = u128::from(over) * 1024 / u128::from(f.size.max(1));
                if best.is_none_or(|(r, _)| ratio < r) {
                    best = Some((ratio, f));
                }
            }
            vec![best?.1]
        };
        let next = if level == 0 {
            // Never below a non-empty level between L0 and the base level:
            // newer versions must stay above older ones.
            (1..base)
                .find(|&l| tree.levels.get(l).is_some_and(|fs| !fs.is_empty()))
                .unwrap_or(base)
        } else {
            level + 1
        };
        let (lo, hi) = key_range(chosen.iter().copied())?;
        let below = tree.overlapping(next, &lo, &hi);
        if below.iter().any(|f| f.busy) {
            return None;
        }
        // The merged range may reach further than the chosen files alone.
        let (lo, hi) = key_range(chosen.iter().copied().chain(below.iter().copied()))?;
        let mut inputs = vec![(level, chosen.iter().map(|f| f.number).collect())];
        if !below.is_empty() {
            inputs.push((next, below.iter().map(|f| f.number).collect()));
        }
        Some(Task {
            inputs,
            output_level: next,
            bottom: tree.is_bottom(next, &lo, &hi),
            reason: format!("L{level} score {score:.2}"),
        })
    }
}

impl Picker for LeveledPicker {
    fn manual_output_level(&self, tree: &TreeShape, deepest_input: usize, all: bool) -> usize {
        // Never above the base level (L0 compacts into it), never L0; a
        // whole-tree compaction lands in the deepest level holding data.
        let base = self.targets(tree).base_level;
        let floor = if all {
            tree.levels
                .iter()
                .rposition(|fs| !fs.is_empty())
                .unwrap_or(0)
        } else {
            deepest_input
        };
        floor.max(base).max(1)
    }

    fn pick(&self, tree: &TreeShape) -> Option<Task> {
        let base = self.targets(tree).base_level;
        let mut scores: Vec<(usize, f64)> = self.scores(tree).into_iter().enumerate().collect();
        scores.sort_by(|a, b| b.1.total_cmp(&a.1));
        scores
            .into_iter()
            .take_while(|&(_, s)| s >= 1.0)
            .find_map(|(level, score)| self.task_for(tree, level, score, base))
    }

    fn pending_bytes(&self, tree: &TreeShape) -> u64 {
        let targets = self.targets(tree);
        let mut total = 0u64;
        if tree.levels.first().map_or(0, Vec::len) >= self.l0_trigger {
            total = total.saturating_add(tree.level_bytes(0));
        }
        // Bytes over a level's target move down and rewrite about `ratio`
        // times as much of the next level (RocksDB's estimate).
        for l in 1..self.max_levels.max(2) - 1 {
            let excess = tree.level_bytes(l).saturating_sub(targets.bytes[l]);
            if excess > 0 {
                total = total.saturating_add(excess.saturating_mul(self.ratio + 1));
            }
        }
        total
    }
}

/// Tiered (universal) compaction over sorted runs.
#[derive(Clone, Debug)]
pub struct TieredPicker {
    /// Runs merge when each is at most this percent larger than the sum
    /// of the newer runs picked so far. Default 1.
    pub size_ratio_percent: u64,
    /// Fewest runs to merge for the size-ratio trigger. Default 2.
    pub min_merge_width: usize,
    /// Merge everything when the newer runs total this percent of the
    /// oldest run or more. Default 200.
    pub max_space_amp_percent: u64,
    /// Merge when there are at least this many runs. Default 4.
    pub run_trigger: usize,
}

impl Default for TieredPicker {
    fn default() -> Self {
        TieredPicker {
            size_ratio_percent: 1,
            min_merge_width: 2,
            max_space_amp_percent: 200,
            run_trigger: 4,
        }
    }
}

/// A sorted run: one L0 file, or a whole deeper level.
struct Run {
    level: usize,
    files: Vec<u64>,
    bytes: u64,
}

fn runs(tree: &TreeShape) -> Vec<Run> {
    let mut out = Vec::new();
    if let Some(l0) = tree.levels.first() {
        for f in l0 {
            out.push(Run {
                level: 0,
                files: vec![f.number],
                bytes: f.size,
            });
        }
    }
    for (l, fs) in tree.levels.iter().enumerate().skip(1) {
        if !fs.is_empty() {
            out.push(Run {
                level: l,
                files: fs.iter().map(|f| f.number).collect(),
                bytes: fs.iter().map(|f| f.size).sum(),
            });
        }
    }
    out
}

impl Picker for TieredPicker {
    /// Tasks take the newest runs whole, so one runs at a time.
    fn may_start(&self, running: usize) -> bool {
        running == 0
    }

    /// Runs span the whole key range: merging a range merges them all.
    fn manual_takes_all(&self) -> bool {
        true
    }

    /// Everything merged lands in the deepest level, as the space
    /// amplification merge does.
    fn manual_output_level(&self, tree: &TreeShape, _deepest_input: usize, _all: bool) -> usize {
        tree.levels.len().saturating_sub(1).max(1)
    }

    fn pending_bytes(&self, tree: &TreeShape) -> u64 {
        // What the next merge would read; nothing when no rule fires.
        let Some(task) = self.pick(tree) else {
            return 0;
        };
        task.inputs
            .iter()
            .flat_map(|(l, ns)| {
                tree.levels
                    .get(*l)
                    .into_iter()
                    .flatten()
                    .filter(move |f| ns.contains(&f.number))
            })
            .map(|f| f.size)
            .sum()
    }

    fn pick(&self, tree: &TreeShape) -> Option<Task> {
        // Tasks take the newest runs whole, so one runs at a time.
        if tree.levels.iter().flatten().any(|f| f.busy) {
            return None;
        }
        let runs = runs(tree); // newest first
        if runs.len() < self.run_trigger.max(2) {
            return None;
        }
        let deepest = tree.levels.len().saturating_sub(1).max(1);
        let task = |picked: &[Run], reason: String, all: bool| {
            let mut inputs: Vec<(usize, Vec<u64>)> = Vec::new();
            for r in picked {
                match inputs.iter_mut().find(|(l, _)| *l == r.level) {
                    Some((_, fs)) => fs.extend(&r.files),
                    None => inputs.push((r.level, r.files.clone())),
                }
            }
            // The output takes the slot of the oldest run picked: its level
            // if it is a deeper level, else the empty level just above the
            // next older run (L0 if that run is in L1). Everything: the
            // deepest level.
            let oldest_level = picked.last().map_or(0, |r| r.level);
            let out = if all {
                deepest
            } else if oldest_level >= 1 {
                oldest_level
            } else {
                let next_level = runs.get(picked.len()).map_or(deepest + 1, |r| r.level);
                next_level.saturating_sub(1)
            };
            Task {
                inputs,
                output_level: out,
                bottom: all,
                reason,
            }
        };
        // Space amplification: the newer runs against the oldest.
        let (oldest, newer) = runs.split_last()?;
        let newer_bytes: u64 = newer.iter().map(|r| r.bytes).sum();
        if newer_bytes.saturating_mul(100)
            >= oldest.bytes.saturating_mul(self.max_space_amp_percent)
        {
            let pct = newer_bytes * 100 / oldest.bytes.max(1);
            return Some(task(&runs, format!("space amplification {pct}%"), true));
        }
        // Size ratio: grow a window of similar-sized runs from the newest.
        let mut sum = runs[0].bytes;
        let mut n = 1;
        while n < runs.len()
            && runs[n].bytes.saturating_mul(100)
                <= sum.saturating_mul(100 + self.size_ratio_percent)
        {
            sum += runs[n].bytes;
            n += 1;
        }
        if n >= self.min_merge_width {
            let all = n == runs.len();
            return Some(task(&runs[..n], format!("{n} runs of similar size"), all));
        }
        // Too many runs whatever their sizes: merge the newest ones so
        // that `run_trigger` remain (RocksDB's "reduce sorted runs"); at
        // the trigger itself only the size rules merge.
        let n = (runs.len() + 1).saturating_sub(self.run_trigger.max(2));
        if n < self.min_merge_width.max(2) {
            return None;
        }
        let all = n == runs.len();
        Some(task(&runs[..n], format!("{} runs", runs.len()), all))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(number: u64, size: u64, lo: &str, hi: &str) -> FileInfo {
        FileInfo {
            number,
            size,
            smallest: lo.as_bytes().to_vec(),
            largest: hi.as_bytes().to_vec(),
            busy: false,
        }
    }

    #[test]
    fn leveled_compacts_l0_into_the_overlapping_part_of_l1() {
        let p = LeveledPicker {
            l0_trigger: 2,
            base_bytes: 1000,
            ratio: 10,
            max_levels: 4,
            dynamic: false,
        };
        let mut tree = TreeShape {
            levels: vec![
                vec![f(9, 10, "c", "f")],
                vec![
                    f(1, 100, "a", "b"),
                    f(2, 100, "d", "e"),
                    f(3, 100, "g", "h"),
                ],
                vec![],
            ],
        };
        assert_eq!(p.pick(&tree), None, "one L0 file is under the trigger");
        tree.levels[0].insert(0, f(10, 10, "e", "g"));
        let t = p.pick(&tree).expect("L0 at trigger");
        assert_eq!(t.inputs, vec![(0, vec![10, 9]), (1, vec![2, 3])]);
        assert_eq!(t.output_level, 1);
        assert!(t.bottom, "nothing below L1");
    }

    #[test]
    fn leveled_picks_the_level_furthest_over_target_and_knows_the_bottom() {
        let p = LeveledPicker {
            l0_trigger: 4,
            base_bytes: 100,
            ratio: 10,
            max_levels: 4,
            dynamic: false,
        };
        let tree = TreeShape {
            levels: vec![
                vec![],
                vec![f(1, 90, "a", "c"), f(2, 300, "d", "m")],
                vec![f(3, 500, "k", "z")],
                vec![f(4, 10, "a", "b")],
            ],
        };
        // L1: 390/100 = 3.9; L2: 500/1000 = 0.5. File 1 overlaps
        // nothing in L2: moving it costs no rewriting.
        let t = p.pick(&tree).expect("L1 over target");
        assert_eq!(t.inputs, vec![(1, vec![1])]);
        assert_eq!(t.output_level, 2);
        assert!(!t.bottom, "L3 holds [a, b]");
        let s = p.scores(&tree);
        assert!((s[1] - 3.9).abs() < 1e-9);
        // With file 1 busy, file 2 goes, with the L2 file it overlaps.
        let mut busy = tree.clone();
        busy.levels[1][0].busy = true;
        let t = p.pick(&busy).expect("L1 still over target");
        assert_eq!(t.inputs, vec![(1, vec![2]), (2, vec![3])]);
        assert!(t.bottom, "L3 holds nothing in [d, z]");
        // And with the L2 file busy too, nothing can go.
        busy.levels[2][0].busy = true;
        assert_eq!(p.pick(&busy), None);
    }

    #[test]
    fn dynamic_level_targets_grow_from_the_largest_level() {
        let p = LeveledPicker {
            l0_trigger: 4,
            base_bytes: 100,
            ratio: 10,
            max_levels: 5,
            dynamic: true,
        };
        // Empty tree: L0 goes straight to the last level.
        let empty = TreeShape {
            levels: vec![vec![]; 5],
        };
        let t = p.targets(&empty);
        assert_eq!(t.base_level, 4);
        assert_eq!(t.bytes, vec![0, 0, 0, 0, 100]);
        // 5000 bytes at the bottom: 500 above it, 50 above that (<= 100),
        // but no target below 100.
        let mut tree = empty.clone();
        tree.levels[4] = vec![f(1, 5000, "a", "z")];
        let t = p.targets(&tree);
        assert_eq!(
            (t.base_level, t.bytes.clone()),
            (2, vec![0, 0, 100, 500, 5000])
        );
        // Four L0 files go to the base level, not L1.
        tree.levels[0] = (10..14).map(|n| f(n, 10, "a", "c")).collect();
        let task = p.pick(&tree).expect("L0 at trigger");
        assert_eq!(task.output_level, 2);
        assert!(
            p.pending_bytes(&tree) >= 40,
            "L0 at its trigger is pending work"
        );
        // Data in a level above that: it becomes the base level.
        tree.levels[1] = vec![f(5, 1, "x", "y")];
        assert_eq!(p.targets(&tree).base_level, 1);
        assert_eq!(p.pick(&tree).expect("L0").output_level, 1);
    }

    #[test]
    fn tiered_merges_similar_runs_and_bounds_space_amplification() {
        let p = TieredPicker {
            run_trigger: 3,
            ..TieredPicker::default()
        };
        // Three equal flushes over a large base run: merge the three.
        let tree = TreeShape {
            levels: vec![
                vec![f(7, 10, "a", "z"), f(6, 10, "a", "z"), f(5, 10, "a", "z")],
                vec![],
                vec![f(1, 1000, "a", "z")],
            ],
        };
        let t = p.pick(&tree).expect("similar runs");
        assert_eq!(t.inputs, vec![(0, vec![7, 6, 5])]);
        assert!(!t.bottom);
        assert_eq!(t.output_level, 1, "the empty slot above the base run");
        // With L1 holding a run that is not picked, the merge stays in L0.
        let tree = TreeShape {
            levels: vec![
                vec![f(7, 10, "a", "z"), f(6, 10, "a", "z")],
                vec![f(3, 500, "a", "z")],
                vec![f(1, 1000, "a", "z")],
            ],
        };
        let t = p.pick(&tree).expect("similar runs");
        assert_eq!(
            (t.inputs.clone(), t.output_level),
            (vec![(0, vec![7, 6])], 0)
        );
        // Newer runs outweigh the base twice over: merge everything.
        let tree = TreeShape {
            levels: vec![
                vec![f(7, 300, "a", "z"), f(6, 10, "a", "z")],
                vec![],
                vec![f(1, 150, "a", "z")],
            ],
        };
        let t = p.pick(&tree).expect("space amplification");
        assert!(t.bottom && t.output_level == 2, "{t:?}");
        assert_eq!(t.inputs, vec![(0, vec![7, 6]), (2, vec![1])]);
        // Few runs: nothing to do.
        let tree = TreeShape {
            levels: vec![vec![f(2, 10, "a", "z")], vec![f(1, 1000, "a", "z")]],
        };
        assert_eq!(p.pick(&tree), None);
    }

    use proptest::prelude::*;

    /// A random tree: overlapping L0 files, and deeper levels of
    /// non-overlapping files cut from sorted boundaries.
    fn tree() -> impl Strategy<Value = TreeShape> {
        let l0 = prop::collection::vec((0u8..50, 0u8..50, 1u64..100), 0..8);
        let deeper = prop::collection::vec(prop::collection::btree_set(0u8..100, 0..10), 1..4);
        (l0, deeper).prop_map(|(l0, deeper)| {
            let mut n = 0u64;
            let mut next = || {
                n += 1;
                n
            };
            let key = |b: u8| vec![b'a' + b / 4, b'0' + b % 4];
            let mut levels = vec![l0
                .into_iter()
                .map(|(a, b, size)| f_bytes(next(), size, key(a.min(b)), key(a.max(b))))
                .collect::<Vec<_>>()];
            for bounds in deeper {
                let b: Vec<u8> = bounds.into_iter().collect();
                let files = b
                    .chunks(2)
                    .filter(|c| c.len() == 2)
                    .map(|c| {
                        f_bytes(
                            next(),
                            u64::from(c[1] - c[0]) * 40 + 1,
                            key(c[0]),
                            key(c[1]),
                        )
                    })
                    .collect();
                levels.push(files);
            }
            TreeShape { levels }
        })
    }

    fn f_bytes(number: u64, size: u64, smallest: Vec<u8>, largest: Vec<u8>) -> FileInfo {
        FileInfo {
            number,
            size,
            smallest,
            largest,
            busy: false,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
            ..ProptestConfig::default()
        })]

        #[test]
        fn leveled_tasks_take_every_overlapping_file_below(
            mut t in tree(),
            base in 50u64..2000,
            dynamic in any::<bool>(),
            busy in prop::collection::vec(any::<bool>(), 64),
        ) {
            for (i, f) in t.levels.iter_mut().flatten().enumerate() {
                f.busy = busy[i % busy.len()] && i % 3 == 0;
            }
            let p = LeveledPicker { l0_trigger: 3, base_bytes: base, ratio: 4, max_levels: t.levels.len() + 1, dynamic };
            let scores = p.scores(&t);
            let base_level = p.targets(&t).base_level;
            let is_busy = |n: u64| t.levels.iter().flatten().any(|f| f.number == n && f.busy);
            match p.pick(&t) {
                None => {
                    // Nothing over target, or every candidate blocked by a busy file.
                    let any_busy = t.levels.iter().flatten().any(|f| f.busy);
                    prop_assert!(any_busy || scores.iter().all(|&s| s < 1.0));
                }
                Some(task) => {
                    let level = task.inputs[0].0;
                    prop_assert!(scores[level] >= 1.0);
                    prop_assert!(task.inputs.iter().flat_map(|(_, ns)| ns).all(|&n| !is_busy(n)), "a busy file was taken");
                    let next = task.output_level;
                    if level == 0 {
                        let want = (1..base_level).find(|&l| !t.levels[l].is_empty()).unwrap_or(base_level);
                        prop_assert_eq!(next, want);
                        prop_assert_eq!(task.inputs[0].1.len(), t.levels[0].len(), "L0 goes down whole");
                    } else {
                        prop_assert_eq!(next, level + 1);
                    }
                    // Levels between the input and the output are empty.
                    prop_assert!((level + 1..next).all(|l| t.levels[l].is_empty()));
                    let chosen: Vec<&FileInfo> = t.levels[level].iter().filter(|f| task.inputs[0].1.contains(&f.number)).collect();
                    let (lo, hi) = key_range(chosen.iter().copied()).expect("inputs");
                    let want: Vec<u64> = t.overlapping(next, &lo, &hi).iter().map(|f| f.number).collect();
                    let got: Vec<u64> = task.inputs.get(1).map(|x| x.1.clone()).unwrap_or_default();
                    prop_assert_eq!(got, want);
                    // Bottom only if no deeper level overlaps what is written.
                    let all: Vec<&FileInfo> = task.inputs.iter().flat_map(|(l, ns)| t.levels[*l].iter().filter(move |f| ns.contains(&f.number))).collect();
                    let (lo, hi) = key_range(all).expect("inputs");
                    let deeper_overlap = (next + 1..t.levels.len()).any(|l| !t.overlapping(l, &lo, &hi).is_empty());
                    prop_assert_eq!(task.bottom, !deeper_overlap);
                }
            }
        }

        #[test]
        fn tiered_tasks_merge_the_newest_runs_into_a_free_slot(t in tree()) {
            let p = TieredPicker { run_trigger: 3, ..TieredPicker::default() };
            let all_runs = runs(&t);
            if let Some(task) = p.pick(&t) {
                // The picked files are exactly the newest k runs.
                let picked: Vec<u64> = task.inputs.iter().flat_map(|(_, fs)| fs.clone()).collect();
                let k = all_runs.iter().scan(0usize, |n, r| { *n += r.files.len(); Some(*n) }).position(|n| n == picked.len());
                let k = k.map(|i| i + 1);
                prop_assert!(k.is_some(), "picked files are not a prefix of the runs");
                let prefix: Vec<u64> = all_runs[..k.unwrap_or(0)].iter().flat_map(|r| r.files.clone()).collect();
                prop_assert_eq!(picked, prefix);
                // The output slot holds no run that is not merged.
                let out = task.output_level;
                let untouched = all_runs[k.unwrap_or(0)..].iter().any(|r| r.level == out && r.level != 0);
                prop_assert!(!untouched, "output level {} holds an unmerged run", out);
            }
        }
    }
}
