//! Seeded, deterministic splits and subsets of labelled data sets.
//!
//! Every function here is a pure function of its inputs and seed: the same call gives the same
//! samples on every machine (`StdRng` is a seeded ChaCha generator). Selections keep the data
//! set's original order, so a subset of a subset is predictable too.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::error::{DataError, Result};

/// A data set whose samples carry class labels and can be subset.
///
/// Implemented by [`ImageSet`](crate::ImageSet) (in memory) and
/// [`ImageFolder`](crate::ImageFolder) (files on disk).
pub trait LabelledSet: Sized {
    /// Number of samples.
    fn len(&self) -> usize;
    /// Whether the set has no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Class index of sample `index`.
    fn label(&self, index: usize) -> usize;
    /// Class names, indexed by label.
    fn class_names(&self) -> &[String];
    /// The samples at `indices`, in that order.
    fn select(&self, indices: &[usize]) -> Self;
    /// The same samples with labels mapped through `old_to_new` and new class names.
    fn relabel(&self, old_to_new: &[usize], class_names: Vec<String>) -> Self;

    /// Number of classes.
    fn num_classes(&self) -> usize {
        self.class_names().len()
    }
}

/// Sample indices grouped by class, each group in data-set order.
fn indices_by_class<S: LabelledSet>(set: &S) -> Vec<Vec<usize>> {
    let mut groups = vec![Vec::new(); set.num_classes()];
    for i in 0..set.len() {
        groups[set.label(i)].push(i);
    }
    groups
}

/// Splits off a validation set of `val_fraction` of each class (stratified, seeded), like
/// scikit-learn's `train_test_split(stratify=y)`. Returns `(train, validation)`.
///
/// Each class contributes `round(val_fraction * class_count)` samples to validation.
pub fn train_val_split<S: LabelledSet>(set: &S, val_fraction: f64, seed: u64) -> Result<(S, S)> {
    if !(val_fraction > 0.0 && val_fraction < 1.0) {
        return Err(DataError::invalid(format!(
            "validation fraction must be in (0, 1), got {val_fraction}"
        )));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut train = Vec::new();
    let mut val = Vec::new();
    for mut group in indices_by_class(set) {
        group.shuffle(&mut rng);
        let n_val = (val_fraction * group.len() as f64).round() as usize;
        val.extend_from_slice(&group[..n_val]);
        train.extend_from_slice(&group[n_val..]);
    }
    if train.is_empty() || val.is_empty() {
        return Err(DataError::invalid(format!(
            "a validation fraction of {val_fraction} of {} samples leaves {} for training and {} for validation; both need at least one",
            set.len(),
            train.len(),
            val.len()
        )));
    }
    train.sort_unstable();
    val.sort_unstable();
    Ok((set.select(&train), set.select(&val)))
}

/// Stratified `k`-fold cross-validation splits, like scikit-learn's
/// `StratifiedKFold(k, shuffle=True)`: each class is shuffled (seeded) and dealt round-robin into
/// `k` folds, so every fold holds `1/k` of each class (up to one sample). Returns, for each
/// fold `i`, `(train, validation)` where validation is fold `i` and train the other `k - 1`.
pub fn k_fold<S: LabelledSet>(set: &S, k: usize, seed: u64) -> Result<Vec<(S, S)>> {
    if k < 2 {
        return Err(DataError::invalid(format!(
            "k-fold cross-validation needs k >= 2, got {k}"
        )));
    }
    if set.len() < k {
        return Err(DataError::invalid(format!(
            "{k} folds need at least {k} samples, the set has {}",
            set.len()
        )));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut folds: Vec<Vec<usize>> = vec![Vec::new(); k];
    // Continue the round-robin across classes so small classes do not all start at fold 0.
    let mut next = 0;
    for mut group in indices_by_class(set) {
        group.shuffle(&mut rng);
        for index in group {
            folds[next % k].push(index);
            next += 1;
        }
    }
    Ok((0..k)
        .map(|i| {
            let mut train: Vec<usize> = folds
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .flat_map(|(_, f)| f.iter().copied())
                .collect();
            let mut val = folds[i].clone();
            train.sort_unstable();
            val.sort_unstable();
            (set.select(&train), set.select(&val))
        })
        .collect())
}

/// Keeps only the samples of `classes` and relabels them `0..classes.len()` in the order given
/// (e.g. `[5, 6, 7, 8, 9]` maps class 5 to 0 and class 9 to 4).
pub fn filter_classes<S: LabelledSet>(set: &S, classes: &[usize]) -> Result<S> {
    if classes.is_empty() {
        return Err(DataError::invalid(
            "class filter is empty: name at least one class",
        ));
    }
    let n = set.num_classes();
    let mut old_to_new = vec![usize::MAX; n];
    for (new, &old) in classes.iter().enumerate() {
        if old >= n {
            return Err(DataError::invalid(format!(
                "class {old} does not exist (the data set has classes 0..{})",
                n - 1
            )));
        }
        if old_to_new[old] != usize::MAX {
            return Err(DataError::invalid(format!(
                "class {old} is listed twice in the class filter"
            )));
        }
        old_to_new[old] = new;
    }
    let keep: Vec<usize> = (0..set.len())
        .filter(|&i| old_to_new[set.label(i)] != usize::MAX)
        .collect();
    let names = classes
        .iter()
        .map(|&c| set.class_names()[c].clone())
        .collect();
    Ok(set.select(&keep).relabel(&old_to_new, names))
}

/// Draws exactly `per_class` samples of every class (seeded): a few-shot training set.
pub fn few_shot<S: LabelledSet>(set: &S, per_class: usize, seed: u64) -> Result<S> {
    if per_class == 0 {
        return Err(DataError::invalid(
            "few-shot subset needs at least 1 sample per class",
        ));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut keep = Vec::with_capacity(per_class * set.num_classes());
    for (class, mut group) in indices_by_class(set).into_iter().enumerate() {
        if group.len() < per_class {
            return Err(DataError::invalid(format!(
                "class {class} ({}) has {} samples, fewer than the {per_class} asked for",
                set.class_names()[class],
                group.len()
            )));
        }
        group.shuffle(&mut rng);
        keep.extend_from_slice(&group[..per_class]);
    }
    keep.sort_unstable();
    Ok(set.select(&keep))
}

/// A seeded random subset of `n` samples, stratified so each class keeps its share
/// (largest-remainder rounding, so the total is exactly `n`).
pub fn random_subset<S: LabelledSet>(set: &S, n: usize, seed: u64) -> Result<S> {
    if n == 0 || n > set.len() {
        return Err(DataError::invalid(format!(
            "subset size must be between 1 and {} (the data set's size), got {n}",
            set.len()
        )));
    }
    let groups = indices_by_class(set);
    let total = set.len() as f64;
    // Largest-remainder apportionment of n over the classes.
    let exact: Vec<f64> = groups
        .iter()
        .map(|g| n as f64 * g.len() as f64 / total)
        .collect();
    let mut counts: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by(|&a, &b| {
        let ra = exact[a] - exact[a].floor();
        let rb = exact[b] - exact[b].floor();
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    let mut missing = n - counts.iter().sum::<usize>();
    for &c in order.iter().cycle() {
        if missing == 0 {
            break;
        }
        if counts[c] < groups[c].len() {
            counts[c] += 1;
            missing -= 1;
        }
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut keep = Vec::with_capacity(n);
    for (mut group, count) in groups.into_iter().zip(counts) {
        group.shuffle(&mut rng);
        keep.extend_from_slice(&group[..count]);
    }
    keep.sort_unstable();
    Ok(set.select(&keep))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ImageSet;
    use proptest::prelude::*;

    /// A set whose pixel value is the sample's original index, so subsets can be traced back.
    fn traced(labels: Vec<u8>, classes: usize) -> ImageSet {
        let pixels: Vec<u8> = (0..labels.len()).map(|i| i as u8).collect();
        let names = (0..classes).map(|c| format!("class{c}")).collect();
        ImageSet::new("traced", [1, 1, 1], pixels, labels, names).unwrap()
    }

    fn origins(set: &ImageSet) -> Vec<u8> {
        (0..set.len()).map(|i| set.image(i)[0]).collect()
    }

    #[test]
    fn split_is_stratified_disjoint_and_seeded() {
        let labels: Vec<u8> = (0..200).map(|i| (i % 4) as u8).collect();
        let set = traced(labels, 4);
        let (train, val) = train_val_split(&set, 0.25, 7).unwrap();
        assert_eq!(val.len(), 52); // round(0.25 * 50) = 13 per class
        assert_eq!(val.class_counts(), vec![13; 4]);
        assert_eq!(train.len() + val.len(), 200);
        let mut all: Vec<u8> = origins(&train);
        all.extend(origins(&val));
        all.sort_unstable();
        assert_eq!(all, (0..200).map(|i| i as u8).collect::<Vec<_>>());
        let (_, again) = train_val_split(&set, 0.25, 7).unwrap();
        assert_eq!(origins(&val), origins(&again));
        let (_, other) = train_val_split(&set, 0.25, 8).unwrap();
        assert_ne!(origins(&val), origins(&other));
    }

    #[test]
    fn k_folds_partition_the_set_stratified_and_seeded() {
        let labels: Vec<u8> = (0..200).map(|i| (i % 4) as u8).collect();
        let set = traced(labels, 4);
        let folds = k_fold(&set, 5, 3).unwrap();
        assert_eq!(folds.len(), 5);
        let mut seen: Vec<u8> = Vec::new();
        for (train, val) in &folds {
            assert_eq!(val.len(), 40);
            assert_eq!(val.class_counts(), vec![10; 4]);
            assert_eq!(train.len(), 160);
            // Disjoint within a fold.
            let v = origins(val);
            assert!(origins(train).iter().all(|o| !v.contains(o)));
            seen.extend(v);
        }
        // The validation folds together are the whole set, each sample once.
        seen.sort_unstable();
        assert_eq!(seen, (0..200).map(|i| i as u8).collect::<Vec<_>>());
        let again = k_fold(&set, 5, 3).unwrap();
        assert_eq!(origins(&folds[2].1), origins(&again[2].1));
        assert_ne!(
            origins(&folds[2].1),
            origins(&k_fold(&set, 5, 4).unwrap()[2].1)
        );
        assert!(
            k_fold(&set, 1, 0)
                .unwrap_err()
                .to_string()
                .contains("k >= 2")
        );
        assert!(k_fold(&traced(vec![0, 1], 2), 3, 0).is_err());
    }

    #[test]
    fn split_rejects_bad_fractions() {
        let set = traced(vec![0, 1], 2);
        for f in [0.0, 1.0, -0.5, f64::NAN] {
            let msg = train_val_split(&set, f, 0).unwrap_err().to_string();
            assert!(
                msg.starts_with("validation fraction must be in (0, 1)"),
                "{msg}"
            );
        }
        let msg = train_val_split(&set, 0.2, 0).unwrap_err().to_string();
        assert!(
            msg.contains("leaves 2 for training and 0 for validation"),
            "{msg}"
        );
    }

    #[test]
    fn filter_relabels_in_given_order() {
        let set = traced(vec![0, 5, 9, 6, 5, 1], 10);
        let sub = filter_classes(&set, &[5, 6, 7, 8, 9]).unwrap();
        assert_eq!(origins(&sub), vec![1, 2, 3, 4]);
        assert_eq!(sub.labels(), &[0, 4, 1, 0]);
        assert_eq!(sub.class_names()[4], "class9");
        assert_eq!(sub.num_classes(), 5);

        let msg = filter_classes(&set, &[3, 10]).unwrap_err().to_string();
        assert_eq!(
            msg,
            "class 10 does not exist (the data set has classes 0..9)"
        );
        let msg = filter_classes(&set, &[3, 3]).unwrap_err().to_string();
        assert_eq!(msg, "class 3 is listed twice in the class filter");
        assert!(filter_classes(&set, &[]).is_err());
    }

    #[test]
    fn few_shot_takes_exactly_n_per_class() {
        let labels: Vec<u8> = (0..100).map(|i| (i % 5) as u8).collect();
        let set = traced(labels, 5);
        let shot = few_shot(&set, 3, 1).unwrap();
        assert_eq!(shot.class_counts(), vec![3; 5]);
        assert_eq!(origins(&shot), origins(&few_shot(&set, 3, 1).unwrap()));
        let msg = few_shot(&set, 21, 1).unwrap_err().to_string();
        assert_eq!(
            msg,
            "class 0 (class0) has 20 samples, fewer than the 21 asked for"
        );
        assert!(few_shot(&set, 0, 1).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// A random subset has exactly n samples, no duplicates, and each class within one
        /// sample of its proportional share.
        #[test]
        fn random_subset_is_exact_and_proportional(
            labels in proptest::collection::vec(0u8..4, 1..200),
            frac in 0.01f64..1.0,
            seed in any::<u64>(),
        ) {
            let set = traced(labels.clone(), 4);
            let n = ((labels.len() as f64 * frac).ceil() as usize).clamp(1, labels.len());
            let sub = random_subset(&set, n, seed).unwrap();
            prop_assert_eq!(sub.len(), n);
            let mut seen = origins(&sub);
            seen.dedup();
            prop_assert_eq!(seen.len(), n);
            let full = set.class_counts();
            for (c, &count) in sub.class_counts().iter().enumerate() {
                let share = n as f64 * full[c] as f64 / labels.len() as f64;
                prop_assert!((count as f64 - share).abs() < 1.0 + 1e-9);
            }
        }
    }
}
