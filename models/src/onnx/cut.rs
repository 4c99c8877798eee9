//! Cuts a sub-model out of an ONNX file: keep what a chosen set of outputs depends on, and turn
//! chosen intermediate tensors into inputs. Used to run a model in two steps with our own code
//! between them (Kokoro: predict durations, adjust them, then decode).
//!
//! Works on the protobuf bytes directly (`wire`): node, initializer and value-info messages are
//! copied verbatim, only the graph's lists are rebuilt.

use std::collections::{HashMap, HashSet};

use super::wire::{self, Field, WireError};

/// ONNX `TensorProto.DataType` values used by the cuts we make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    Float = 1,
    Int64 = 7,
}

#[derive(Debug, Clone, Copy)]
pub enum Dim<'a> {
    Fixed(i64),
    Named(&'a str),
}

/// A tensor that becomes an input or an output of the cut model.
#[derive(Debug, Clone, Copy)]
pub struct TensorSpec<'a> {
    pub name: &'a str,
    pub elem_type: ElemType,
    pub dims: &'a [Dim<'a>],
}

#[derive(Debug, thiserror::Error)]
pub enum CutError {
    #[error("not an ONNX model: {0}")]
    Wire(#[from] WireError),
    #[error("the ONNX file has no graph")]
    NoGraph,
    #[error("no node produces tensor {0:?}, and it is not an input or initializer")]
    Missing(String),
    #[error("node {0:?} has a sub-graph attribute; cutting such graphs is not supported")]
    SubGraph(String),
}

// Field numbers of onnx.proto (ModelProto, GraphProto, NodeProto, …).
const MODEL_GRAPH: u32 = 7;
const GRAPH_NODE: u32 = 1;
const GRAPH_INITIALIZER: u32 = 5;
const GRAPH_INPUT: u32 = 11;
const GRAPH_OUTPUT: u32 = 12;
const GRAPH_VALUE_INFO: u32 = 13;
const GRAPH_SPARSE_INITIALIZER: u32 = 15;
const NODE_INPUT: u32 = 1;
const NODE_OUTPUT: u32 = 2;
const NODE_NAME: u32 = 3;
const NODE_ATTRIBUTE: u32 = 5;
const ATTRIBUTE_GRAPH: u32 = 6;
const ATTRIBUTE_GRAPHS: u32 = 11;
const TENSOR_NAME: u32 = 8;
const SPARSE_VALUES: u32 = 1;
const VALUE_INFO_NAME: u32 = 1;

struct Node<'a> {
    bytes: &'a [u8],
    inputs: Vec<&'a str>,
    outputs: Vec<&'a str>,
}

/// A new model computing `outputs` from the original graph's inputs and `new_inputs`
/// (intermediate tensors fed from outside). Nodes nothing asks for are left out, and so are
/// the original inputs and initializers they alone used.
pub fn sub_model(
    model: &[u8],
    new_inputs: &[TensorSpec],
    outputs: &[TensorSpec],
) -> Result<Vec<u8>, CutError> {
    let model_fields = wire::fields(model)?;
    let graph = model_fields
        .iter()
        .find(|f| f.number == MODEL_GRAPH)
        .and_then(Field::payload)
        .ok_or(CutError::NoGraph)?;
    let graph = sub_graph(graph, new_inputs, outputs)?;
    let mut out = Vec::with_capacity(model.len());
    for field in &model_fields {
        if field.number == MODEL_GRAPH {
            wire::put_bytes(&mut out, MODEL_GRAPH, &graph);
        } else {
            out.extend_from_slice(field.bytes);
        }
    }
    Ok(out)
}

fn sub_graph(
    graph: &[u8],
    new_inputs: &[TensorSpec],
    outputs: &[TensorSpec],
) -> Result<Vec<u8>, CutError> {
    let fields = wire::fields(graph)?;
    let mut nodes = Vec::new();
    for field in fields.iter().filter(|f| f.number == GRAPH_NODE) {
        nodes.push(node(field)?);
    }
    let producer: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.outputs.iter().map(move |&o| (o, i)))
        .collect();
    let named = |number: u32, name_field: u32| -> Result<HashSet<&str>, CutError> {
        let mut names = HashSet::new();
        for f in fields.iter().filter(|f| f.number == number) {
            if let Some(name) = field_string(f, name_field)? {
                names.insert(name);
            }
        }
        Ok(names)
    };
    let graph_inputs = named(GRAPH_INPUT, VALUE_INFO_NAME)?;
    let initializers = named(GRAPH_INITIALIZER, TENSOR_NAME)?;
    let fed: HashSet<&str> = new_inputs.iter().map(|s| s.name).collect();

    // Walk back from the outputs; a fed tensor stops the walk, whatever produced it.
    let mut keep = vec![false; nodes.len()];
    let mut needed: HashSet<&str> = HashSet::new();
    let mut stack: Vec<&str> = outputs.iter().map(|s| s.name).collect();
    while let Some(name) = stack.pop() {
        if name.is_empty() || !needed.insert(name) || fed.contains(name) {
            continue;
        }
        match producer.get(name) {
            Some(&i) if !keep[i] => {
                keep[i] = true;
                stack.extend(nodes[i].inputs.iter().copied());
            }
            Some(_) => {}
            None if graph_inputs.contains(name) || initializers.contains(name) => {}
            None => return Err(CutError::Missing(name.to_owned())),
        }
    }
    let produced: HashSet<&str> = nodes
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .flat_map(|(n, _)| n.outputs.iter().copied())
        .collect();

    let mut out = Vec::with_capacity(graph.len());
    for (n, _) in nodes.iter().zip(&keep).filter(|(_, k)| **k) {
        out.extend_from_slice(n.bytes);
    }
    for field in &fields {
        let keep_field = match field.number {
            GRAPH_NODE | GRAPH_OUTPUT => false,
            GRAPH_INITIALIZER => {
                field_string(field, TENSOR_NAME)?.is_some_and(|n| needed.contains(n))
            }
            GRAPH_SPARSE_INITIALIZER => sparse_name(field)?.is_some_and(|n| needed.contains(n)),
            GRAPH_INPUT => field_string(field, VALUE_INFO_NAME)?
                .is_some_and(|n| needed.contains(n) && !fed.contains(n)),
            // Shape hints only for tensors the cut graph still computes.
            GRAPH_VALUE_INFO => field_string(field, VALUE_INFO_NAME)?
                .is_some_and(|n| produced.contains(n) && !fed.contains(n)),
            _ => true,
        };
        if keep_field {
            out.extend_from_slice(field.bytes);
        }
    }
    for spec in new_inputs {
        wire::put_bytes(&mut out, GRAPH_INPUT, &value_info(spec));
    }
    for spec in outputs {
        wire::put_bytes(&mut out, GRAPH_OUTPUT, &value_info(spec));
    }
    Ok(out)
}

fn node<'a>(field: &Field<'a>) -> Result<Node<'a>, CutError> {
    let bytes = field.bytes;
    let body = field.payload().unwrap_or_default();
    let mut node = Node {
        bytes,
        inputs: Vec::new(),
        outputs: Vec::new(),
    };
    let mut name = "";
    let mut has_sub_graph = false;
    for f in wire::fields(body)? {
        match f.number {
            NODE_INPUT => node.inputs.push(f.string()?.unwrap_or_default()),
            NODE_OUTPUT => node.outputs.push(f.string()?.unwrap_or_default()),
            NODE_NAME => name = f.string()?.unwrap_or_default(),
            NODE_ATTRIBUTE => {
                let attribute = wire::fields(f.payload().unwrap_or_default())?;
                has_sub_graph |= attribute
                    .iter()
                    .any(|a| a.number == ATTRIBUTE_GRAPH || a.number == ATTRIBUTE_GRAPHS);
            }
            _ => {}
        }
    }
    // Sub-graphs read outer tensors by name without listing them as inputs; the walk would miss them.
    if has_sub_graph {
        return Err(CutError::SubGraph(name.to_owned()));
    }
    Ok(node)
}

/// The string field `number` of the message in `field`.
fn field_string<'a>(field: &Field<'a>, number: u32) -> Result<Option<&'a str>, CutError> {
    let Some(body) = field.payload() else {
        return Ok(None);
    };
    for f in wire::fields(body)? {
        if f.number == number {
            return Ok(f.string()?);
        }
    }
    Ok(None)
}

fn sparse_name<'a>(field: &Field<'a>) -> Result<Option<&'a str>, CutError> {
    let Some(body) = field.payload() else {
        return Ok(None);
    };
    for f in wire::fields(body)? {
        if f.number == SPARSE_VALUES {
            return field_string(&f, TENSOR_NAME);
        }
    }
    Ok(None)
}

/// `ValueInfoProto { name, type: TypeProto { tensor_type: { elem_type, shape } } }`.
fn value_info(spec: &TensorSpec) -> Vec<u8> {
    let mut shape = Vec::new();
    for dim in spec.dims {
        let mut d = Vec::new();
        match dim {
            Dim::Fixed(v) => wire::put_int(&mut d, 1, *v),
            Dim::Named(n) => wire::put_bytes(&mut d, 2, n.as_bytes()),
        }
        wire::put_bytes(&mut shape, 1, &d);
    }
    let mut tensor = Vec::new();
    wire::put_int(&mut tensor, 1, spec.elem_type as i64);
    wire::put_bytes(&mut tensor, 2, &shape);
    let mut type_proto = Vec::new();
    wire::put_bytes(&mut type_proto, 1, &tensor);
    let mut info = Vec::new();
    wire::put_bytes(&mut info, 1, spec.name.as_bytes());
    wire::put_bytes(&mut info, 2, &type_proto);
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built graph: x -> Neg -> a -> Neg -> b, with an unrelated c = Neg(y).
    fn model() -> Vec<u8> {
        let node = |input: &str, output: &str, name: &str| {
            let mut n = Vec::new();
            wire::put_bytes(&mut n, NODE_INPUT, input.as_bytes());
            wire::put_bytes(&mut n, NODE_OUTPUT, output.as_bytes());
            wire::put_bytes(&mut n, NODE_NAME, name.as_bytes());
            wire::put_bytes(&mut n, 4, b"Neg");
            n
        };
        let spec = |name| TensorSpec {
            name,
            elem_type: ElemType::Float,
            dims: &[Dim::Named("n")],
        };
        let mut g = Vec::new();
        for (i, o, n) in [("x", "a", "n1"), ("a", "b", "n2"), ("y", "c", "n3")] {
            wire::put_bytes(&mut g, GRAPH_NODE, &node(i, o, n));
        }
        for name in ["x", "y"] {
            wire::put_bytes(&mut g, GRAPH_INPUT, &value_info(&spec(name)));
        }
        for name in ["b", "c"] {
            wire::put_bytes(&mut g, GRAPH_OUTPUT, &value_info(&spec(name)));
        }
        let mut m = Vec::new();
        wire::put_int(&mut m, 1, 9);
        wire::put_bytes(&mut m, MODEL_GRAPH, &g);
        m
    }

    fn names(model: &[u8], number: u32, name_field: u32) -> Vec<String> {
        let top = wire::fields(model).unwrap();
        let graph = top.iter().find(|f| f.number == MODEL_GRAPH).unwrap();
        wire::fields(graph.payload().unwrap())
            .unwrap()
            .iter()
            .filter(|f| f.number == number)
            .map(|f| field_string(f, name_field).unwrap().unwrap().to_owned())
            .collect()
    }

    const A: TensorSpec = TensorSpec {
        name: "a",
        elem_type: ElemType::Float,
        dims: &[Dim::Named("n")],
    };
    const B: TensorSpec = TensorSpec {
        name: "b",
        elem_type: ElemType::Float,
        dims: &[Dim::Named("n")],
    };

    #[test]
    fn front_half_keeps_only_what_the_output_needs() {
        let cut = sub_model(&model(), &[], &[A]).unwrap();
        assert_eq!(names(&cut, GRAPH_NODE, NODE_NAME), ["n1"]);
        assert_eq!(names(&cut, GRAPH_INPUT, VALUE_INFO_NAME), ["x"]);
        assert_eq!(names(&cut, GRAPH_OUTPUT, VALUE_INFO_NAME), ["a"]);
        // Fields outside the graph are copied.
        assert!(matches!(
            wire::fields(&cut).unwrap()[0].value,
            wire::Value::Varint(9)
        ));
    }

    #[test]
    fn back_half_takes_the_cut_tensor_as_an_input() {
        let cut = sub_model(&model(), &[A], &[B]).unwrap();
        assert_eq!(names(&cut, GRAPH_NODE, NODE_NAME), ["n2"]);
        assert_eq!(names(&cut, GRAPH_INPUT, VALUE_INFO_NAME), ["a"]);
        assert_eq!(names(&cut, GRAPH_OUTPUT, VALUE_INFO_NAME), ["b"]);
    }

    #[test]
    fn unknown_tensors_and_garbage_are_errors() {
        let z = TensorSpec { name: "z", ..A };
        assert!(matches!(sub_model(&model(), &[], &[z]), Err(CutError::Missing(n)) if n == "z"));
        assert!(matches!(
            sub_model(b"\x0a\x05ab", &[], &[A]),
            Err(CutError::Wire(_))
        ));
        assert!(matches!(sub_model(b"", &[], &[A]), Err(CutError::NoGraph)));
    }
}
