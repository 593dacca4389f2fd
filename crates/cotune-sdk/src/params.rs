//! Parameters by name: listing, export and all-or-nothing import.
//!
//! A parameter's name is its path in the module tree joined with dots (`blocks.0.attn.c_attn.weight`),
//! exactly as burn's module traversal reports it. Parameters inside a reparameterization (LoRA
//! adapters) are domain-specific; everything else is shared.

use std::collections::{BTreeMap, HashMap};

use abi_stable::std_types::{RString, RVec};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};
use cotune_abi::{ErrorKind, NamedTensor, ParamSelection, PluginError};

const REPARAMETERIZATION: &str = "Reparameterization";

/// Tracks the dotted path and whether it runs through a reparameterization.
#[derive(Default)]
struct Path {
    parts: Vec<String>,
    reparam_depth: Vec<bool>,
}

impl Path {
    fn enter(&mut self, name: &str, container: &str) {
        self.parts.push(name.to_string());
        self.reparam_depth.push(container == REPARAMETERIZATION);
    }
    fn exit(&mut self) {
        self.parts.pop();
        self.reparam_depth.pop();
    }
    fn name(&self) -> String {
        self.parts.join(".")
    }
    fn is_adapter(&self) -> bool {
        self.reparam_depth.iter().any(|&r| r)
    }
}

/// A parameter's name, shape and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamInfo {
    /// Dotted path.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Whether it is a domain-specific (adapter) parameter.
    pub adapter: bool,
}

fn selected(selection: ParamSelection, adapter: bool) -> bool {
    match selection {
        ParamSelection::All => true,
        ParamSelection::Shared => !adapter,
        ParamSelection::DomainSpecific => adapter,
    }
}

struct Lister {
    path: Path,
    out: Vec<ParamInfo>,
}

impl ModuleVisitor for Lister {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.out.push(ParamInfo {
            name: self.path.name(),
            shape: param.lazy_shape().dims::<D>().to_vec(),
            adapter: self.path.is_adapter(),
        });
    }
}

/// Every float parameter of `model`, in traversal order, without reading values.
pub fn list<M: Module>(model: &M) -> Vec<ParamInfo> {
    let mut lister = Lister {
        path: Path::default(),
        out: Vec::new(),
    };
    model.visit(&mut lister);
    lister.out
}

struct Exporter {
    path: Path,
    selection: ParamSelection,
    out: Vec<NamedTensor>,
    error: Option<String>,
}

impl ModuleVisitor for Exporter {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !selected(self.selection, self.path.is_adapter()) {
            return;
        }
        let tensor = param.val();
        let shape: RVec<u64> = tensor.dims().iter().map(|&d| d as u64).collect();
        match tensor.into_data().convert::<f32>().try_into_vec::<f32>() {
            Ok(data) => self.out.push(NamedTensor {
                name: RString::from(self.path.name()),
                shape,
                data: RVec::from(data),
            }),
            Err(e) => {
                self.error
                    .get_or_insert_with(|| format!("reading {}: {e:?}", self.path.name()));
            }
        }
    }
}

/// The selected parameters of `model` as named `f32` tensors.
pub fn export<M: Module>(
    model: &M,
    selection: ParamSelection,
) -> Result<Vec<NamedTensor>, PluginError> {
    let mut exporter = Exporter {
        path: Path::default(),
        selection,
        out: Vec::new(),
        error: None,
    };
    model.visit(&mut exporter);
    match exporter.error {
        Some(e) => Err(PluginError::new(ErrorKind::Internal, e)),
        None => Ok(exporter.out),
    }
}

struct Importer<'a> {
    path: Path,
    values: HashMap<&'a str, &'a NamedTensor>,
}

impl ModuleMapper for Importer<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let name = self.path.name();
        match self.values.get(name.as_str()) {
            Some(value) => {
                let shape: Vec<usize> = value.shape.iter().map(|&d| d as usize).collect();
                let data = TensorData::new(value.data.to_vec(), shape);
                // A tensor built from data is untracked: carry the old one's gradient setting
                // over, or an imported parameter would silently stop training.
                param.map(|old| {
                    let require_grad = old.is_require_grad();
                    Tensor::from_data(data, &old.device()).set_require_grad(require_grad)
                })
            }
            None => param,
        }
    }
}

/// Overwrites the named parameters of `model`; every name and shape is checked before anything
/// is written, so a refused import leaves the model untouched.
pub fn import<M: Module>(model: M, params: &[NamedTensor]) -> Result<M, PluginError> {
    let known: BTreeMap<String, Vec<usize>> = list(&model)
        .into_iter()
        .map(|p| (p.name, p.shape))
        .collect();
    let mut values = HashMap::new();
    for p in params {
        let name = p.name.as_str();
        let Some(shape) = known.get(name) else {
            let hint: Vec<&str> = known.keys().take(5).map(String::as_str).collect();
            return Err(PluginError::new(
                ErrorKind::UnknownParameter,
                format!(
                    "the model has no parameter `{name}` (it has {} parameters, e.g. {})",
                    known.len(),
                    hint.join(", ")
                ),
            ));
        };
        let given: Vec<usize> = p.shape.iter().map(|&d| d as usize).collect();
        if &given != shape || given.iter().product::<usize>() != p.data.len() {
            return Err(PluginError::new(
                ErrorKind::ShapeMismatch,
                format!(
                    "parameter `{name}` has shape {shape:?}, but the import gives shape {given:?} with {} values",
                    p.data.len()
                ),
            ));
        }
        if let Some(v) = p.data.iter().find(|v| !v.is_finite()) {
            return Err(PluginError::new(
                ErrorKind::NonFinite,
                format!("parameter `{name}` contains the value {v}"),
            ));
        }
        if values.insert(name, p).is_some() {
            return Err(PluginError::new(
                ErrorKind::InvalidInput,
                format!("parameter `{name}` is given twice"),
            ));
        }
    }
    let mut importer = Importer {
        path: Path::default(),
        values,
    };
    Ok(model.map(&mut importer))
}
