//! An in-memory labelled image set of `u8` pixels (MNIST, Fashion-MNIST, CIFAR-10).

use std::sync::Arc;

use burn::data::dataset::{Dataset, DatasetError};

use crate::error::{DataError, Result};
use crate::split::LabelledSet;

/// One labelled image: `u8` pixels in `[C, H, W]` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageItem {
    /// Pixels, channel-major (`C * H * W` bytes).
    pub pixels: Vec<u8>,
    /// `[channels, height, width]`.
    pub shape: [usize; 3],
    /// Class index, below the set's number of classes.
    pub label: usize,
}

/// A labelled set of same-sized `u8` images held in memory.
///
/// Cloning is cheap (the pixels are shared); subsets copy only the images they keep.
#[derive(Debug, Clone)]
pub struct ImageSet {
    name: String,
    shape: [usize; 3],
    pixels: Arc<Vec<u8>>,
    labels: Arc<Vec<u8>>,
    class_names: Arc<Vec<String>>,
}

impl ImageSet {
    /// Builds a set, checking that pixels and labels agree and every label names a class.
    pub fn new(
        name: impl Into<String>,
        shape: [usize; 3],
        pixels: Vec<u8>,
        labels: Vec<u8>,
        class_names: Vec<String>,
    ) -> Result<Self> {
        let name = name.into();
        let per_image: usize = shape.iter().product();
        if per_image == 0 {
            return Err(DataError::invalid(format!(
                "{name}: image shape {shape:?} has a zero dimension"
            )));
        }
        if pixels.len() != labels.len() * per_image {
            return Err(DataError::invalid(format!(
                "{name}: {} pixel bytes do not make {} images of shape {shape:?} ({} bytes each)",
                pixels.len(),
                labels.len(),
                per_image
            )));
        }
        if class_names.len() > 256 {
            return Err(DataError::invalid(format!(
                "{name}: {} classes; an ImageSet stores labels as bytes (at most 256 classes)",
                class_names.len()
            )));
        }
        if let Some((index, &label)) = labels
            .iter()
            .enumerate()
            .find(|&(_, &l)| l as usize >= class_names.len())
        {
            return Err(DataError::invalid(format!(
                "{name}: label {label} at index {index} is out of range ({} classes)",
                class_names.len()
            )));
        }
        Ok(Self {
            name,
            shape,
            pixels: Arc::new(pixels),
            labels: Arc::new(labels),
            class_names: Arc::new(class_names),
        })
    }

    /// Number of images (an inherent method, so it does not clash between the
    /// [`Dataset`] and [`LabelledSet`] traits).
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set has no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The set's name, e.g. `fashion-mnist/train`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `[channels, height, width]` of every image.
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    /// The pixels of image `index`, channel-major.
    ///
    /// # Panics
    /// If `index >= len()`, like slice indexing.
    pub fn image(&self, index: usize) -> &[u8] {
        let n: usize = self.shape.iter().product();
        &self.pixels[index * n..(index + 1) * n]
    }

    /// All labels, in order.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// How many images each class has.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.class_names.len()];
        for &l in self.labels.iter() {
            counts[l as usize] += 1;
        }
        counts
    }
}

impl LabelledSet for ImageSet {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn label(&self, index: usize) -> usize {
        self.labels[index] as usize
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }

    fn select(&self, indices: &[usize]) -> Self {
        let n: usize = self.shape.iter().product();
        let mut pixels = Vec::with_capacity(indices.len() * n);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Self {
            name: self.name.clone(),
            shape: self.shape,
            pixels: Arc::new(pixels),
            labels: Arc::new(labels),
            class_names: self.class_names.clone(),
        }
    }

    fn relabel(&self, old_to_new: &[usize], class_names: Vec<String>) -> Self {
        let labels = self
            .labels
            .iter()
            .map(|&l| old_to_new[l as usize] as u8)
            .collect();
        Self {
            name: self.name.clone(),
            shape: self.shape,
            pixels: self.pixels.clone(),
            labels: Arc::new(labels),
            class_names: Arc::new(class_names),
        }
    }
}

impl Dataset<ImageItem> for ImageSet {
    fn get(&self, index: usize) -> Result<ImageItem, DatasetError> {
        Ok(ImageItem {
            pixels: self.image(index).to_vec(),
            shape: self.shape,
            label: self.labels[index] as usize,
        })
    }

    fn len(&self) -> usize {
        self.labels.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{i}")).collect()
    }

    #[test]
    fn rejects_inconsistent_inputs() {
        let err = ImageSet::new("t", [1, 2, 2], vec![0; 7], vec![0, 1], names(2)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t: 7 pixel bytes do not make 2 images of shape [1, 2, 2] (4 bytes each)"
        );
        let err = ImageSet::new("t", [1, 2, 2], vec![0; 8], vec![0, 2], names(2)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t: label 2 at index 1 is out of range (2 classes)"
        );
        let err = ImageSet::new("t", [1, 0, 2], vec![], vec![], names(2)).unwrap_err();
        assert!(err.to_string().contains("zero dimension"));
    }

    #[test]
    fn items_select_and_relabel() {
        let set = ImageSet::new(
            "t",
            [1, 1, 2],
            vec![1, 2, 3, 4, 5, 6],
            vec![0, 2, 1],
            names(3),
        )
        .unwrap();
        assert_eq!(Dataset::len(&set), 3);
        assert_eq!(
            set.get(1).unwrap(),
            ImageItem {
                pixels: vec![3, 4],
                shape: [1, 1, 2],
                label: 2
            }
        );
        let sub = set.select(&[2, 0]);
        assert_eq!(sub.image(0), &[5, 6]);
        assert_eq!(sub.labels(), &[1, 0]);
        let re = sub.relabel(&[1, 0, 0], vec!["a".into(), "b".into()]);
        assert_eq!(re.labels(), &[0, 1]);
        assert_eq!(re.class_counts(), vec![1, 1]);
    }
}
