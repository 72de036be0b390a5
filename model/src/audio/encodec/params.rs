//! Where EnCodec's tensors come from and how they are named: a `VarBuilder` (training or a
//! random init) or a loaded checkpoint (HF names), with every tensor recorded under its HF name
//! so the model can be listed and saved in the layout `EncodecModel.save_pretrained` writes.
//!
//! Loading checks presence and shape first, so a broken checkpoint is an error that names the
//! tensor; tensors are converted to f32 on the model's device. Tensors the model does not read
//! are reported by [`Params::unused`].

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{Init, VarBuilder};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

/// Tensors in the order the model asked for them: full HF name, tensor.
pub(crate) type Named = Vec<(String, Tensor)>;

#[derive(Clone)]
enum Source<'a> {
    Vars(VarBuilder<'a>),
    File(Rc<HashMap<String, Tensor>>),
}

/// A parameter source one name level deep, recording what it hands out.
#[derive(Clone)]
pub(crate) struct Params<'a> {
    source: Source<'a>,
    prefix: String,
    device: Device,
    record: Rc<RefCell<Named>>,
    used: Rc<RefCell<HashSet<String>>>,
}

impl<'a> Params<'a> {
    /// Parameters created (or read) by `vb`.
    pub(crate) fn vars(vb: VarBuilder<'a>) -> Self {
        let device = vb.device().clone();
        Self::with(Source::Vars(vb), device)
    }

    /// Parameters read from a checkpoint's tensors (HF names), placed on `device` as f32.
    pub(crate) fn file(tensors: HashMap<String, Tensor>, device: &Device) -> Self {
        Self::with(Source::File(Rc::new(tensors)), device.clone())
    }

    fn with(source: Source<'a>, device: Device) -> Self {
        Params {
            source,
            prefix: String::new(),
            device,
            record: Rc::new(RefCell::new(Vec::new())),
            used: Rc::new(RefCell::new(HashSet::new())),
        }
    }

    /// One name level down.
    pub(crate) fn pp(&self, name: impl ToString) -> Params<'a> {
        let mut p = self.clone();
        p.prefix = self.full(&name.to_string());
        if let Source::Vars(vb) = &self.source {
            p.source = Source::Vars(vb.pp(name));
        }
        p
    }

    /// The full name of `name` at this level.
    pub(crate) fn full(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// The device the tensors go to.
    pub(crate) fn device(&self) -> &Device {
        &self.device
    }

    /// Whether this source is a loaded checkpoint (not a `VarBuilder`).
    pub(crate) fn is_file(&self) -> bool {
        matches!(self.source, Source::File(_))
    }

    /// The checkpoint tensor `name` without recording it (marked used), f32 on the device,
    /// checked against `shape`; `None` when absent (or when the source is a `VarBuilder`).
    pub(crate) fn take(&self, shape: &[usize], name: &str) -> Result<Option<Tensor>> {
        let Source::File(map) = &self.source else {
            return Ok(None);
        };
        let full = self.full(name);
        let Some(t) = map.get(&full) else {
            return Ok(None);
        };
        if t.dims() != shape {
            return Err(Error::BadShape {
                name: full,
                got: t.dims().to_vec(),
                expected: shape.to_vec(),
            });
        }
        self.used.borrow_mut().insert(full);
        Ok(Some(t.to_dtype(DType::F32)?.to_device(&self.device)?))
    }

    /// The tensor `name` of `shape`: read from the checkpoint (missing → an error naming it) or
    /// created by the `VarBuilder` with `init`; recorded under its full name.
    pub(crate) fn get(&self, shape: &[usize], name: &str, init: Init) -> Result<Tensor> {
        let t = match &self.source {
            Source::Vars(vb) => vb.get_with_hints(shape, name, init)?,
            Source::File(_) => self
                .take(shape, name)?
                .ok_or_else(|| Error::MissingTensor(self.full(name)))?,
        };
        self.put(name, &t);
        Ok(t)
    }

    /// Records `t` under `name` at this level (for listing and saving).
    pub(crate) fn put(&self, name: &str, t: &Tensor) {
        self.record.borrow_mut().push((self.full(name), t.clone()));
    }

    /// Every tensor recorded so far, in order.
    pub(crate) fn recorded(&self) -> Named {
        self.record.borrow().clone()
    }

    /// Checkpoint tensors nobody read, sorted (empty for a `VarBuilder`).
    pub(crate) fn unused(&self) -> Vec<String> {
        let Source::File(map) = &self.source else {
            return Vec::new();
        };
        let used = self.used.borrow();
        let mut out: Vec<String> = map.keys().filter(|k| !used.contains(*k)).cloned().collect();
        out.sort();
        out
    }
}
