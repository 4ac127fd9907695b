//! SigLIP's tokenizer from its SentencePiece model (`spiece.model`), which is all SigLIP
//! checkpoints publish (transformers has no fast tokenizer for it).
//!
//! `spiece.model` is a protobuf `ModelProto`: the pieces with their scores and types, the trainer
//! spec (`unk_id`, `byte_fallback`) and the normaliser spec (a precompiled NFKC-style charsmap).
//! transformers' `SiglipTokenizer` then: lowercases, removes ASCII punctuation
//! (`string.punctuation`), collapses whitespace runs to one space and strips the ends (big_vision's
//! `canonicalize_text`), starts the text with the word-boundary mark `▁`, segments it with the
//! unigram model, and appends `</s>`. The same steps are built here with `tokenizers` parts.

use std::path::Path;

use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::{
    precompiled::Precompiled, replace::ReplacePattern, Lowercase, NormalizerWrapper, Prepend,
    Replace, Sequence, Strip,
};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

use crate::model::dual::ModelError;

/// What the engine needs from a `ModelProto`.
struct SpModel {
    pieces: Vec<(String, f64)>,
    unk_id: usize,
    byte_fallback: bool,
    charsmap: Vec<u8>,
}

/// A protobuf field: number and payload.
enum Field<'a> {
    Varint(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
    Other,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    /// The next field, `None` at the end; `Err` on malformed input.
    fn field(&mut self) -> Result<Option<(u64, Field<'a>)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let start = self.pos;
        let bad = || format!("malformed protobuf field at byte {start}");
        let key = self.varint().ok_or_else(bad)?;
        let field = match key & 7 {
            0 => Field::Varint(self.varint().ok_or_else(bad)?),
            1 => {
                self.take(8).ok_or_else(bad)?;
                Field::Other
            }
            2 => {
                let n = usize::try_from(self.varint().ok_or_else(bad)?).map_err(|_| bad())?;
                Field::Bytes(self.take(n).ok_or_else(bad)?)
            }
            5 => {
                let b = self.take(4).ok_or_else(bad)?;
                Field::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            other => return Err(format!("unsupported protobuf wire type {other}")),
        };
        Ok(Some((key >> 3, field)))
    }
}

fn parse(bytes: &[u8]) -> Result<SpModel, String> {
    let mut model = SpModel {
        pieces: Vec::new(),
        unk_id: 0,
        byte_fallback: false,
        charsmap: Vec::new(),
    };
    let mut r = Reader { buf: bytes, pos: 0 };
    while let Some((number, field)) = r.field()? {
        match (number, field) {
            // repeated SentencePiece pieces = 1 { piece = 1; score = 2; type = 3 }
            (1, Field::Bytes(b)) => {
                let (mut piece, mut score) = (String::new(), 0f32);
                let mut p = Reader { buf: b, pos: 0 };
                while let Some((n, f)) = p.field()? {
                    match (n, f) {
                        (1, Field::Bytes(s)) => {
                            piece = String::from_utf8(s.to_vec())
                                .map_err(|_| "a piece is not UTF-8".to_string())?
                        }
                        (2, Field::Fixed32(bits)) => score = f32::from_bits(bits),
                        _ => {}
                    }
                }
                model.pieces.push((piece, f64::from(score)));
            }
            // TrainerSpec trainer_spec = 2 { byte_fallback = 35; unk_id = 40 }
            (2, Field::Bytes(b)) => {
                let mut t = Reader { buf: b, pos: 0 };
                while let Some((n, f)) = t.field()? {
                    match (n, f) {
                        (35, Field::Varint(v)) => model.byte_fallback = v != 0,
                        (40, Field::Varint(v)) => {
                            model.unk_id = usize::try_from(v).map_err(|_| "bad unk_id")?
                        }
                        _ => {}
                    }
                }
            }
            // NormalizerSpec normalizer_spec = 3 { precompiled_charsmap = 2 }
            (3, Field::Bytes(b)) => {
                let mut n = Reader { buf: b, pos: 0 };
                while let Some((k, f)) = n.field()? {
                    if let (2, Field::Bytes(map)) = (k, f) {
                        model.charsmap = map.to_vec();
                    }
                }
            }
            _ => {}
        }
    }
    if model.pieces.is_empty() {
        return Err("no pieces".into());
    }
    if model.unk_id >= model.pieces.len() {
        return Err(format!("unk_id {} is not a piece", model.unk_id));
    }
    Ok(model)
}

/// Builds SigLIP's tokenizer from `spiece.model`; `eos` is appended to every text.
pub(super) fn siglip_tokenizer(
    path: &Path,
    lowercase: bool,
    eos: &str,
) -> Result<Tokenizer, ModelError> {
    let err = |reason: String| ModelError::Tokenizer {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let sp = parse(&bytes).map_err(err)?;
    let eos_id = sp
        .pieces
        .iter()
        .position(|(p, _)| p == eos)
        .ok_or_else(|| err(format!("no piece {eos}")))?;
    let unigram = Unigram::from(sp.pieces, Some(sp.unk_id), sp.byte_fallback)
        .map_err(|e| err(e.to_string()))?;
    let mut steps: Vec<NormalizerWrapper> = Vec::new();
    if lowercase {
        steps.push(Lowercase.into());
    }
    let punctuation = r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]"##;
    let replace = |pattern: &str, with: &str| -> Result<NormalizerWrapper, ModelError> {
        Ok(Replace::new(ReplacePattern::Regex(pattern.into()), with)
            .map_err(|e| err(e.to_string()))?
            .into())
    };
    steps.push(replace(punctuation, "")?);
    steps.push(replace(r"\s+", " ")?);
    steps.push(Strip::new(true, true).into());
    if !sp.charsmap.is_empty() {
        steps.push(
            Precompiled::from(&sp.charsmap)
                .map_err(|e| err(format!("precompiled charsmap: {e}")))?
                .into(),
        );
    }
    steps.push(Prepend::new("\u{2581}".into()).into());
    steps.push(
        Replace::new(" ", "\u{2581}")
            .map_err(|e| err(e.to_string()))?
            .into(),
    );
    let mut tok = Tokenizer::new(unigram);
    tok.with_normalizer(Some(Sequence::new(steps)))
        .map_err(|e| err(e.to_string()))?;
    let post = TemplateProcessing::builder()
        .try_single(format!("$A {eos}"))
        .map_err(err)?
        .special_tokens(vec![(eos.to_string(), eos_id as u32)])
        .build()
        .map_err(|e| err(e.to_string()))?;
    tok.with_post_processor(Some(post));
    tok.add_special_tokens(vec![AddedToken::from(eos.to_string(), true)])
        .map_err(|e| err(e.to_string()))?;
    Ok(tok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pieces_and_specs() {
        // pieces { piece: "a" score: -1.5 } trainer_spec { unk_id: 0 }
        let mut bytes = vec![0x0a, 0x08, 0x0a, 0x01, b'a', 0x15];
        bytes.extend_from_slice(&(-1.5f32).to_le_bytes());
        bytes.extend_from_slice(&[0x12, 0x03, 0xc0, 0x02, 0x00]);
        let m = parse(&bytes).unwrap();
        assert_eq!(m.pieces, vec![("a".to_string(), -1.5)]);
        assert_eq!(m.unk_id, 0);
        assert!(parse(&[0x0a, 0x09]).is_err(), "truncated input is an error");
    }
}
