//! Make the small GGUF files the GPU checks carry to a GPU machine (a call carries 64 MiB):
//!
//! - `gguf_cut IN OUT --layers N`: the model cut to its first N layers (embedding, output norm
//!   and output kept, `<arch>.block_count` set to N), tensors in their original formats;
//! - `gguf_cut IN OUT --header`: metadata and tensor table only, no tensor data (for throughput
//!   runs with synthetic weights of the real shapes).

use std::io::{Read, Write};

use candle_core::Device;
use candle_core::quantized::gguf_file::{self, Content, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: gguf_cut IN OUT (--layers N | --header)";
    let (inp, out, mode) = match a.as_slice() {
        [i, o, m, rest @ ..] => (i, o, (m.as_str(), rest.first())),
        _ => return Err(usage.into()),
    };
    let mut f = std::fs::File::open(inp)?;
    let content = Content::read(&mut f)?;
    match mode {
        ("--header", _) => {
            let mut head = vec![0u8; content.tensor_data_offset as usize];
            let mut f = std::fs::File::open(inp)?;
            f.read_exact(&mut head)?;
            std::fs::File::create(out)?.write_all(&head)?;
        }
        ("--layers", Some(n)) => {
            let n: usize = n.parse()?;
            let arch = match content.metadata.get("general.architecture") {
                Some(Value::String(s)) => s.clone(),
                _ => return Err("no general.architecture".into()),
            };
            let count_key = format!("{arch}.block_count");
            let keep = |name: &str| match name.strip_prefix("blk.") {
                Some(rest) => rest
                    .split('.')
                    .next()
                    .and_then(|i| i.parse::<usize>().ok())
                    .is_some_and(|i| i < n),
                None => true,
            };
            let new_count = Value::U32(n as u32);
            let metadata: Vec<(&str, &Value)> = content
                .metadata
                .iter()
                .map(|(k, v)| (k.as_str(), if *k == count_key { &new_count } else { v }))
                .collect();
            let mut names: Vec<&String> = content.tensor_infos.keys().filter(|k| keep(k)).collect();
            names.sort();
            let tensors = names
                .iter()
                .map(|name| Ok((name.as_str(), content.tensor(&mut f, name, &Device::Cpu)?)))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let refs: Vec<(&str, &candle_core::quantized::QTensor)> =
                tensors.iter().map(|(n, t)| (*n, t)).collect();
            let mut w = std::io::BufWriter::new(std::fs::File::create(out)?);
            gguf_file::write(&mut w, &metadata, &refs)?;
            w.flush()?;
        }
        _ => return Err(usage.into()),
    }
    println!("{out}: {} bytes", std::fs::metadata(out)?.len());
    Ok(())
}
