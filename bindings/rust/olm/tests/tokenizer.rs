//! Tokenizers through the safe API, on a SentencePiece model spm_train trains here.
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use olm::{ErrorCode, SpecialIds, Tokenizer};

mod common;
use common::expect_err;

/// A byte-fallback BPE model with an identity normalizer (lossless), trained once per run.
fn model() -> &'static PathBuf {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("olm-rust-{}-tokenizer", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut corpus = Vec::new();
        for name in ["computers", "science"] {
            corpus.extend(std::fs::read(format!("/usr/share/games/fortunes/{name}")).unwrap());
        }
        std::fs::write(dir.join("corpus.txt"), corpus).unwrap();
        let status = Command::new("spm_train")
            .arg(format!("--input={}", dir.join("corpus.txt").display()))
            .arg(format!("--model_prefix={}", dir.join("tok").display()))
            .args(["--vocab_size=500", "--model_type=bpe", "--byte_fallback=true", "--normalization_rule_name=identity",
                   "--remove_extra_whitespaces=false", "--minloglevel=2"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("spm_train (Debian package sentencepiece)");
        assert!(status.success());
        dir.join("tok.model")
    })
}

const TEXTS: &[&str] = &["Hello world", "", "  runs   of\tspaces\n", "Café 😀 日本", "fn main() { println!(\"{}\", 42); }"];

#[test]
fn encode_decode_round_trip() {
    let tok = Tokenizer::load(model()).unwrap();
    for text in TEXTS {
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(ids.is_empty(), text.is_empty());
        assert_eq!(tok.decode(&ids, false).unwrap(), *text);
        let with = tok.encode(text, true).unwrap();
        assert_eq!(with[0], 1);
        assert_eq!(&with[1..], &ids[..]);
        assert_eq!(tok.decode(&with, true).unwrap(), *text);
        assert_eq!(tok.decode(&with, false).unwrap(), format!("<s>{text}"));
    }
}

#[test]
fn encode_into_and_batch_match_encode() {
    let tok = Tokenizer::load(model()).unwrap();
    let want = tok.encode(TEXTS[3], true).unwrap();
    let mut buf = vec![-7; want.len() + 2];
    let n = tok.encode_into(TEXTS[3], true, &mut buf).unwrap();
    assert_eq!(&buf[..n], &want[..]);
    let mut small = vec![-7; want.len() - 1];
    expect_err(tok.encode_into(TEXTS[3], true, &mut small), ErrorCode::InvalidArgument,
               &format!("the text has {} ids", want.len()));
    assert!(small.iter().all(|&v| v == -7));
    let many: Vec<String> = (0..200).map(|i| format!("{} {}", TEXTS[i % TEXTS.len()], "x".repeat(i % 23))).collect();
    let batch = tok.encode_batch(&many, true).unwrap();
    assert_eq!(batch.len(), many.len());
    for (text, ids) in many.iter().zip(&batch) {
        assert_eq!(*ids, tok.encode(text, true).unwrap());
    }
    assert!(tok.encode_batch::<&str>(&[], false).unwrap().is_empty());
}

#[test]
fn concurrent_encodes_share_one_tokenizer() {
    let tok = Tokenizer::load(model()).unwrap();
    let want: Vec<Vec<i32>> = TEXTS.iter().map(|t| tok.encode(t, true).unwrap()).collect();
    std::thread::scope(|s| {
        for k in 0..4 {
            let (tok, want) = (&tok, &want);
            s.spawn(move || {
                for round in 0..100 {
                    let i = (round + k) % TEXTS.len();
                    assert_eq!(tok.encode(TEXTS[i], true).unwrap(), want[i]);
                }
            });
        }
    });
}

#[test]
fn lookups_and_special_ids() {
    let tok = Tokenizer::load(model()).unwrap();
    assert_eq!(tok.vocab_size().unwrap(), 500);
    assert_eq!(tok.special_ids().unwrap(), SpecialIds { bos: Some(1), eos: Some(2), pad: None, unk: Some(0) });
    assert_eq!(tok.token_to_id("</s>").unwrap(), Some(2));
    assert_eq!(tok.token_to_id("no such token").unwrap(), None);
    assert_eq!(tok.id_to_token(0).unwrap(), "<unk>");
    for id in 0..500 {
        assert_eq!(tok.token_to_id(&tok.id_to_token(id).unwrap()).unwrap(), Some(id));
    }
    expect_err(tok.id_to_token(500), ErrorCode::InvalidArgument, "id: 500");
    expect_err(tok.decode(&[3, 500], false), ErrorCode::InvalidArgument, "ids[1]: 500");
}

#[test]
fn load_errors_name_the_path() {
    expect_err(Tokenizer::load("/nonexistent/tokenizer.model"), ErrorCode::Io, "/nonexistent/tokenizer.model");
    let dir = std::env::temp_dir().join(format!("olm-rust-{}-badtok", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tokenizer.model"), b"not a model").unwrap();
    expect_err(Tokenizer::load(&dir), ErrorCode::Parse, "tokenizer.model");
}

/// A Hugging Face directory: tests/tokenizer/fixtures/bpe_template (its README has the ids,
/// the tokenizers package's).
#[test]
fn hugging_face_directory() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../tests/tokenizer/fixtures/bpe_template");
    let tok = Tokenizer::load(&dir).unwrap();
    assert_eq!(tok.encode("abc ab", true).unwrap(), vec![5, 4, 3]);
    assert_eq!(tok.encode("abc ab", false).unwrap(), vec![4, 3]);
    assert_eq!(tok.encode("abc ab</s>", true).unwrap(), vec![5, 4, 3, 6]);
    assert_eq!(tok.encode("ca d", false).unwrap(), vec![2, 0, 7]);
    assert_eq!(tok.encode("  ab\tc ", true).unwrap(), vec![5, 3, 2]);
    assert_eq!(tok.decode(&[5, 4, 3], true).unwrap(), "abc ab");
    assert_eq!(tok.decode(&[5, 4, 3], false).unwrap(), "<s> abc ab");
    assert_eq!(tok.special_ids().unwrap(), SpecialIds { bos: Some(5), eos: Some(6), pad: None, unk: None });
}
