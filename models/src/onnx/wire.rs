//! Just enough of the protobuf wire format to walk and rebuild an ONNX file without a schema:
//! fields are read as (number, value) with the nested bytes kept verbatim, so everything we do
//! not touch is copied bit for bit.

/// One field of a message: its number, and its raw bytes from tag to end (`bytes`) for copying.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    pub number: u32,
    pub value: Value<'a>,
    pub bytes: &'a [u8],
}

#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    // The cut copies scalars verbatim; only the tests read them.
    #[allow(dead_code)]
    Varint(u64),
    Fixed64,
    Fixed32,
    /// A length-delimited payload: bytes, a string, a nested message or a packed array.
    Bytes(&'a [u8]),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("truncated protobuf at byte {0}")]
    Truncated(usize),
    #[error("unsupported protobuf wire type {wire} at byte {at}")]
    WireType { wire: u64, at: usize },
    #[error("varint longer than 10 bytes at byte {0}")]
    LongVarint(usize),
    #[error("field {0} is not valid UTF-8")]
    Utf8(u32),
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    let start = *pos;
    let mut value = 0u64;
    for shift in 0..10 {
        let byte = *buf.get(*pos).ok_or(WireError::Truncated(*pos))?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << (7 * shift);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(WireError::LongVarint(start))
}

fn take<'a>(buf: &'a [u8], pos: &mut usize, len: u64) -> Result<&'a [u8], WireError> {
    let end = usize::try_from(len)
        .ok()
        .and_then(|len| pos.checked_add(len))
        .filter(|&end| end <= buf.len())
        .ok_or(WireError::Truncated(*pos))?;
    let out = &buf[*pos..end];
    *pos = end;
    Ok(out)
}

/// The fields of one message, in file order.
pub fn fields(buf: &[u8]) -> Result<Vec<Field<'_>>, WireError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let tag = varint(buf, &mut pos)?;
        let number = u32::try_from(tag >> 3).map_err(|_| WireError::Truncated(start))?;
        let value = match tag & 7 {
            0 => Value::Varint(varint(buf, &mut pos)?),
            1 => {
                take(buf, &mut pos, 8)?;
                Value::Fixed64
            }
            2 => {
                let len = varint(buf, &mut pos)?;
                Value::Bytes(take(buf, &mut pos, len)?)
            }
            5 => {
                take(buf, &mut pos, 4)?;
                Value::Fixed32
            }
            wire => return Err(WireError::WireType { wire, at: start }),
        };
        out.push(Field {
            number,
            value,
            bytes: &buf[start..pos],
        });
    }
    Ok(out)
}

impl<'a> Field<'a> {
    pub fn payload(&self) -> Option<&'a [u8]> {
        match self.value {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    pub fn string(&self) -> Result<Option<&'a str>, WireError> {
        self.payload()
            .map(|b| std::str::from_utf8(b).map_err(|_| WireError::Utf8(self.number)))
            .transpose()
    }
}

pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

pub fn put_bytes(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | 2);
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

pub fn put_int(out: &mut Vec<u8>, number: u32, value: i64) {
    put_varint(out, u64::from(number) << 3);
    // Protobuf int32/int64 negatives are the two's complement as a 10-byte varint.
    put_varint(out, value as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_fields_read_back() {
        let mut inner = Vec::new();
        put_bytes(&mut inner, 1, b"name");
        put_int(&mut inner, 3, -2);
        let mut msg = Vec::new();
        put_int(&mut msg, 1, 300);
        put_bytes(&mut msg, 7, &inner);
        let top = fields(&msg).unwrap();
        assert_eq!(top.len(), 2);
        assert!(matches!(top[0].value, Value::Varint(300)));
        assert_eq!(top[1].number, 7);
        let nested = fields(top[1].payload().unwrap()).unwrap();
        assert_eq!(nested[0].string().unwrap(), Some("name"));
        assert!(matches!(nested[1].value, Value::Varint(v) if v as i64 == -2));
        // Raw bytes of each field concatenate back to the message.
        let joined: Vec<u8> = top.iter().flat_map(|f| f.bytes.iter().copied()).collect();
        assert_eq!(joined, msg);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert_eq!(
            fields(&[0x0a, 0x05, b'a']).unwrap_err(),
            WireError::Truncated(2)
        );
        assert_eq!(fields(&[0x08]).unwrap_err(), WireError::Truncated(1));
        assert!(matches!(
            fields(&[0x0b]),
            Err(WireError::WireType { wire: 3, .. })
        ));
        let mut long = vec![0x08];
        long.extend([0xff; 11]);
        assert_eq!(fields(&long).unwrap_err(), WireError::LongVarint(1));
        // A length that would overflow the buffer.
        assert!(fields(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }
}
