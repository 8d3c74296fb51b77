//! What a tower's ONNX graph takes and where its weights are, read without ONNX Runtime: the model fetcher checks a
//! downloaded graph before installing it, and [`crate::model`] checks a session's input by the same rule.
//!
//! Only the few fields of the ONNX protobuf schema (onnx/onnx.proto) needed here are read: the graph's inputs and
//! outputs (`ValueInfoProto`: name, tensor element type, dimensions) and the external data files its initializers
//! name. The rest of the file is skipped field by field.
use std::collections::BTreeSet;

use crate::manifest::Manifest;

/// ONNX's `TensorProto.DataType` codes of the element types a tower takes.
pub const FLOAT: i32 = 1;
pub const INT32: i32 = 6;
pub const INT64: i32 = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TowerKind {
    Text,
    Image,
}

impl TowerKind {
    pub fn name(self) -> &'static str {
        match self {
            TowerKind::Text => "text",
            TowerKind::Image => "image",
        }
    }
}

/// A graph input or output: its name, element type (an ONNX code) and dimensions (`None` where free).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    pub name: String,
    pub elem_type: i32,
    pub dims: Vec<Option<usize>>,
}

/// What a graph file says about itself.
#[derive(Debug, Default)]
pub struct Signature {
    pub inputs: Vec<Tensor>,
    pub outputs: Vec<Tensor>,
    /// The files the graph's initializers keep their data in, as the graph names them (relative to its directory).
    pub external_data: BTreeSet<String>,
}

/// What a tower's graph takes, once checked: exports differ. Immich's fix a batch of one and the text's width and
/// take ids as int32; the project's exporter leaves batch and width free and takes ids as int64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphInput {
    /// `Some(1)` where the graph takes one row at a time, `None` where it takes any batch.
    pub batch: Option<usize>,
    /// The number of tokens a text graph fixes, if it fixes one (then the manifest's context).
    pub width: Option<usize>,
    pub int32_ids: bool,
}

/// Checks a tower's inputs against the manifest: one input, of the tower's kind and the manifest's sizes
/// (`[batch, context]` token ids, `[batch, 3, size, size]` float pixels), the batch free or 1.
pub fn check_input(inputs: &[Tensor], manifest: &Manifest, kind: TowerKind) -> Result<GraphInput, String> {
    let [input] = inputs else {
        let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
        return Err(format!("the graph takes the inputs {names:?}; a {} tower takes one", kind.name()));
    };
    let (expected, int32_ids) = match kind {
        TowerKind::Text => {
            let int32 = match input.elem_type {
                INT64 => false,
                INT32 => true,
                other => return Err(format!("the input {:?} holds ONNX type {other}, not int64 or int32 ids", input.name)),
            };
            (vec![None, Some(manifest.text.context_length)], int32)
        }
        TowerKind::Image => {
            if input.elem_type != FLOAT {
                return Err(format!("the input {:?} holds ONNX type {}, not float32 pixels", input.name, input.elem_type));
            }
            let size = manifest.image.size as usize;
            (vec![None, Some(3), Some(size), Some(size)], false)
        }
    };
    let fits = input.dims.len() == expected.len()
        && input.dims.iter().zip(&expected).all(|(dim, want)| dim.is_none() || want.is_none() || dim == want)
        && matches!(input.dims[0], None | Some(1));
    if !fits {
        let show = |dims: &[Option<usize>]| {
            let dims: Vec<String> = dims.iter().map(|d| d.map_or("?".into(), |d| d.to_string())).collect();
            format!("[{}]", dims.join(", "))
        };
        return Err(format!(
            "the input {:?} has the shape {}, not {} (?: free; the batch free or 1)",
            input.name,
            show(&input.dims),
            show(&expected)
        ));
    }
    let width = if kind == TowerKind::Text { input.dims[1] } else { None };
    Ok(GraphInput { batch: input.dims[0], width, int32_ids })
}

/// Reads a graph's inputs, outputs and external data files from an ONNX file's bytes.
pub fn read_signature(model: &[u8]) -> Result<Signature, String> {
    let mut signature = Signature::default();
    let mut found_graph = false;
    for field in Fields(model) {
        let (number, value) = field?;
        if number == 7 {
            found_graph = true;
            read_graph(value.bytes()?, &mut signature)?;
        }
    }
    if !found_graph {
        return Err("not an ONNX model (no graph)".into());
    }
    Ok(signature)
}

fn read_graph(graph: &[u8], signature: &mut Signature) -> Result<(), String> {
    let mut initializers = BTreeSet::new();
    let mut inputs = Vec::new();
    for field in Fields(graph) {
        let (number, value) = field?;
        match number {
            5 => {
                let (name, location) = read_initializer(value.bytes()?)?;
                initializers.insert(name);
                signature.external_data.extend(location);
            }
            11 => inputs.push(read_value_info(value.bytes()?)?),
            12 => signature.outputs.push(read_value_info(value.bytes()?)?),
            _ => {}
        }
    }
    // Graphs of old IR versions list their initializers among the inputs, as optional inputs.
    signature.inputs = inputs.into_iter().filter(|i| !initializers.contains(&i.name)).collect();
    Ok(())
}

/// An initializer's name and, when its data is external (`data_location` EXTERNAL), the file's location.
fn read_initializer(tensor: &[u8]) -> Result<(String, Option<String>), String> {
    let (mut name, mut location, mut external) = (String::new(), None, false);
    for field in Fields(tensor) {
        let (number, value) = field?;
        match number {
            8 => name = value.string()?,
            13 => {
                let (mut key, mut text) = (String::new(), String::new());
                for entry in Fields(value.bytes()?) {
                    let (number, value) = entry?;
                    match number {
                        1 => key = value.string()?,
                        2 => text = value.string()?,
                        _ => {}
                    }
                }
                if key == "location" {
                    location = Some(text);
                }
            }
            14 => external = value.varint()? == 1,
            _ => {}
        }
    }
    Ok((name, location.filter(|_| external)))
}

fn read_value_info(info: &[u8]) -> Result<Tensor, String> {
    let mut tensor = Tensor { name: String::new(), elem_type: 0, dims: Vec::new() };
    for field in Fields(info) {
        let (number, value) = field?;
        match number {
            1 => tensor.name = value.string()?,
            // TypeProto: tensor_type (1) holds elem_type (1) and shape (2), whose dims (1) hold a dim_value (1)
            // or a dim_param (2), a name for a free dimension.
            2 => {
                for field in Fields(value.bytes()?) {
                    let (number, value) = field?;
                    if number != 1 {
                        continue;
                    }
                    for field in Fields(value.bytes()?) {
                        let (number, value) = field?;
                        match number {
                            1 => tensor.elem_type = value.varint()? as i32,
                            2 => {
                                for dim in Fields(value.bytes()?) {
                                    let (number, value) = dim?;
                                    if number == 1 {
                                        tensor.dims.push(read_dim(value.bytes()?)?);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(tensor)
}

fn read_dim(dim: &[u8]) -> Result<Option<usize>, String> {
    let mut size = None;
    for field in Fields(dim) {
        let (number, value) = field?;
        if number == 1 {
            size = usize::try_from(value.varint()? as i64).ok().filter(|&d| d > 0);
        }
    }
    Ok(size)
}

/// A field's value: a varint, or the bytes of a length-delimited field (fixed-width fields are skipped).
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> Value<'a> {
    fn bytes(self) -> Result<&'a [u8], String> {
        match self {
            Value::Bytes(b) => Ok(b),
            _ => Err("a message field is not length-delimited".into()),
        }
    }

    fn string(self) -> Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| "a name is not UTF-8".into())
    }

    fn varint(self) -> Result<u64, String> {
        match self {
            Value::Varint(v) => Ok(v),
            _ => Err("a number field is not a varint".into()),
        }
    }
}

/// The fields of a protobuf message, in order: (field number, value).
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let field = (|| {
            let key = varint(&mut self.0)?;
            let value = match key & 7 {
                0 => Value::Varint(varint(&mut self.0)?),
                1 => skip(&mut self.0, 8).map(|_| Value::Fixed)?,
                2 => {
                    let len = usize::try_from(varint(&mut self.0)?).map_err(|_| "a length is too large")?;
                    Value::Bytes(skip(&mut self.0, len)?)
                }
                5 => skip(&mut self.0, 4).map(|_| Value::Fixed)?,
                other => return Err(format!("protobuf wire type {other} is not used by ONNX")),
            };
            Ok((key >> 3, value))
        })();
        if field.is_err() {
            self.0 = &[];
        }
        Some(field)
    }
}

fn varint(input: &mut &[u8]) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first().ok_or("the file ends inside a number")?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("a number is longer than 64 bits".into())
}

fn skip<'a>(input: &mut &'a [u8], len: usize) -> Result<&'a [u8], String> {
    if input.len() < len {
        return Err("the file ends inside a field: it is truncated".into());
    }
    let (taken, rest) = input.split_at(len);
    *input = rest;
    Ok(taken)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fixture(path: &str) -> Vec<u8> {
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(path)).unwrap()
    }

    #[test]
    fn reads_the_exporters_graphs() {
        let image = read_signature(&fixture("tiny-model/image.onnx")).unwrap();
        assert_eq!(image.inputs.len(), 1);
        assert_eq!(image.inputs[0].elem_type, FLOAT);
        assert_eq!(&image.inputs[0].dims[1..], &[Some(3), Some(224), Some(224)]);
        assert_eq!(image.inputs[0].dims[0], None);
        assert!(image.external_data.is_empty());
        let text = read_signature(&fixture("tiny-model/text.onnx")).unwrap();
        assert_eq!(text.inputs[0].elem_type, INT64);
        assert_eq!(text.inputs[0].dims, vec![None, None]);
    }

    #[test]
    fn names_the_external_data_file() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-model-external");
        let manifest = Manifest::load(&dir).unwrap();
        let graph = std::fs::read(dir.join(&manifest.files.image.graph.path)).unwrap();
        let signature = read_signature(&graph).unwrap();
        let data = manifest.files.image.data_name().unwrap().to_owned();
        assert_eq!(signature.external_data, BTreeSet::from([data]));
    }

    #[test]
    fn refuses_truncated_and_foreign_files() {
        let text = fixture("tiny-model/text.onnx");
        assert!(read_signature(&text[..text.len() / 2]).unwrap_err().contains("truncated"));
        assert!(read_signature(b"{\"not\": \"onnx\"}").is_err());
    }
}
