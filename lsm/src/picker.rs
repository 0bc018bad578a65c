//! Compaction policies, without I/O: given the shape of the tree (files
//! per level with sizes and key ranges) a picker chooses the next
//! compaction. Two policies sit behind one trait, as RocksDB keeps one
//! picker per style; the merge machinery ([`crate::compaction`]) is shared.
//! The engine does not run them yet: levels and background compaction
//! come with issue #4, which will drive these pickers.
//!
//! * Leveled: L0 collects flushed tables; each deeper level holds
//!   non-overlapping tables and may be `ratio` times larger than the one
//!   above (`base_bytes` for L1). The level whose size is furthest over its
//!   target (or L0 when it has `l0_trigger` files) is compacted into the next.
//!   Low write-through cost per level, read and space amplification low.
//! * Tiered (universal): every L0 table and every deeper level is a sorted
//!   run. Runs of similar size are merged together (size-ratio trigger);
//!   when the runs above the oldest outweigh it by `max_space_amp_percent`,
//!   everything is merged. Less rewriting than leveled (lower write
//!   amplification), at the price of more runs to read and more space.

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
    fn level_bytes(&self, l: usize) -> u64 {
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
    /// The next compaction, or `None` when the tree is in shape.
    fn pick(&self, tree: &TreeShape) -> Option<Task>;
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
    /// L0 files that trigger an L0 -> L1 compaction. Default 4.
    pub l0_trigger: usize,
    /// Target size of L1. Default 256 MiB.
    pub base_bytes: u64,
    /// Size ratio between consecutive levels. Default 10.
    pub ratio: u64,
    /// Number of levels. Default 7.
    pub max_levels: usize,
}

impl Default for LeveledPicker {
    fn default() -> Self {
        LeveledPicker {
            l0_trigger: 4,
            base_bytes: 256 << 20,
            ratio: 10,
            max_levels: 7,
        }
    }
}

impl LeveledPicker {
    fn target(&self, level: usize) -> u64 {
        let exp = u32::try_from(level.saturating_sub(1)).unwrap_or(u32::MAX);
        self.base_bytes
            .saturating_mul(self.ratio.saturating_pow(exp))
    }

    /// Score per level (>= 1 means it needs compaction).
    pub fn scores(&self, tree: &TreeShape) -> Vec<f64> {
        (0..self.max_levels - 1)
            .map(|l| {
                if l == 0 {
                    tree.levels.first().map_or(0, |fs| fs.len()) as f64 / self.l0_trigger as f64
                } else {
                    tree.level_bytes(l) as f64 / self.target(l) as f64
                }
            })
            .collect()
    }
}

impl Picker for LeveledPicker {
    fn pick(&self, tree: &TreeShape) -> Option<Task> {
        let scores = self.scores(tree);
        let (level, score) = scores
            .iter()
            .copied()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        if score < 1.0 {
            return None;
        }
        let files = tree.levels.get(level)?;
        // L0 files overlap each other: take them all. Deeper: the largest
        // file, which frees the most space per rewrite.
        let chosen: Vec<&FileInfo> = if level == 0 {
            files.iter().collect()
        } else {
            files.iter().max_by_key(|f| f.size).into_iter().collect()
        };
        let (lo, hi) = key_range(chosen.iter().copied())?;
        let next = level + 1;
        let below = tree.overlapping(next, &lo, &hi);
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
    fn pick(&self, tree: &TreeShape) -> Option<Task> {
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
        // Too many runs: merge the newest ones down to the trigger.
        let n = runs.len() - self.run_trigger + 2;
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
        }
    }

    #[test]
    fn leveled_compacts_l0_into_the_overlapping_part_of_l1() {
        let p = LeveledPicker {
            l0_trigger: 2,
            base_bytes: 1000,
            ratio: 10,
            max_levels: 4,
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
        };
        let tree = TreeShape {
            levels: vec![
                vec![],
                vec![f(1, 90, "a", "c"), f(2, 300, "d", "m")],
                vec![f(3, 500, "k", "z")],
                vec![f(4, 10, "a", "b")],
            ],
        };
        // L1: 390/100 = 3.9; L2: 500/1000 = 0.5.
        let t = p.pick(&tree).expect("L1 over target");
        assert_eq!(t.inputs, vec![(1, vec![2]), (2, vec![3])]);
        assert_eq!(t.output_level, 2);
        assert!(t.bottom, "L3 holds nothing in [d, z]");
        let s = p.scores(&tree);
        assert!((s[1] - 3.9).abs() < 1e-9);
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
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
            ..ProptestConfig::default()
        })]

        #[test]
        fn leveled_tasks_take_every_overlapping_file_below(t in tree(), base in 50u64..2000) {
            let p = LeveledPicker { l0_trigger: 3, base_bytes: base, ratio: 4, max_levels: t.levels.len() + 1 };
            let scores = p.scores(&t);
            match p.pick(&t) {
                None => prop_assert!(scores.iter().all(|&s| s < 1.0)),
                Some(task) => {
                    let level = task.inputs[0].0;
                    prop_assert_eq!(task.output_level, level + 1);
                    prop_assert!(scores[level] >= 1.0 && scores.iter().all(|&s| s <= scores[level]));
                    let chosen: Vec<&FileInfo> = t.levels[level].iter().filter(|f| task.inputs[0].1.contains(&f.number)).collect();
                    let (lo, hi) = key_range(chosen.iter().copied()).expect("inputs");
                    let want: Vec<u64> = t.overlapping(level + 1, &lo, &hi).iter().map(|f| f.number).collect();
                    let got: Vec<u64> = task.inputs.get(1).map(|x| x.1.clone()).unwrap_or_default();
                    prop_assert_eq!(got, want);
                    // Bottom only if no deeper level overlaps what is written.
                    let all: Vec<&FileInfo> = task.inputs.iter().flat_map(|(l, ns)| t.levels[*l].iter().filter(move |f| ns.contains(&f.number))).collect();
                    let (lo, hi) = key_range(all).expect("inputs");
                    let deeper_overlap = (level + 2..t.levels.len()).any(|l| !t.overlapping(l, &lo, &hi).is_empty());
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
