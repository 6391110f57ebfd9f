//! Hugging Face model directories: an olm model exported, imported back with equal logits,
//! the config alone, and bad directories refused naming the file and the field.
use std::fs;
use std::path::PathBuf;

use olm::{Config, Device, Dtype, ErrorCode, HfLoadOptions, HfSaveOptions, Model, ModelOptions, Tensor};

// Qwen3-shaped: pre-norm blocks with Qwen's RMSNorm and per-head QK-norm, tied embeddings.
const QWEN3: &str = r#"{"d_model": 32, "vocab_size": 64, "n_layers": 2, "tie_word_embeddings": true,
 "block": {"name": "default",
   "attention": {"n_heads": 4, "n_kv_heads": 2, "bias": false, "rope": {"theta": 10000, "full_precision": false},
                 "qk_norm": {"name": "qwen_rms", "eps": 1e-6, "bias": false}, "use_head_qk_norm": true},
   "feed_forward": {"hidden_size": 96, "bias": false},
   "layer_norm": {"name": "qwen_rms", "eps": 1e-6, "bias": false}},
 "lm_head": {"layer_norm": {"name": "qwen_rms", "eps": 1e-6, "bias": false}, "bias": false}}"#;

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("olm_rust_hf_{}_{}", name, std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn logits(model: &Model) -> Vec<f32> {
    let ids: Vec<i64> = (0..16).map(|i| (i * 11 + 5) % 64).collect();
    let t = Tensor::from_i64(&ids, &[2, 8]).unwrap();
    model.forward(&t).unwrap().to_vec_f32().unwrap()
}

#[test]
fn export_and_import_round_trip() {
    let cfg = Config::from_json(QWEN3).unwrap();
    let model = Model::new(&cfg, Device::Cpu, &ModelOptions::default()).unwrap();
    let base = temp("round_trip");
    let dir = base.join("qwen3");
    let tok = base.join("tok");
    fs::create_dir_all(&tok).unwrap();
    fs::write(tok.join("tokenizer.json"), b"{}").unwrap();
    model
        .save_hf_dir(&dir, &HfSaveOptions::default().max_shard_bytes(8000).tokenizer_source_dir(&tok).token_ids(Some(1), Some(2)))
        .unwrap();
    let config = fs::read_to_string(dir.join("config.json")).unwrap();
    assert!(config.contains("\"Qwen3ForCausalLM\""), "{config}");
    assert!(config.contains("\"tie_word_embeddings\": true"), "{config}");
    assert!(dir.join("model.safetensors.index.json").exists());
    assert!(dir.join("tokenizer.json").exists());
    assert!(!config.contains("lm_head"));

    let back = Model::from_hf_dir(&dir, &HfLoadOptions::default()).unwrap();
    assert_eq!(logits(&back), logits(&model));

    let bf16 = Model::from_hf_dir(&dir, &HfLoadOptions::default().dtype(Some(Dtype::BFloat16))).unwrap();
    assert_eq!(bf16.parameters().unwrap()[0].dtype, Dtype::BFloat16);

    let imported = Config::from_hf_dir(&dir, &HfLoadOptions::default()).unwrap();
    assert!(imported.to_json().unwrap().contains("qwen_rms"));

    // Never over a non-empty directory.
    let again = model.save_hf_dir(&dir, &HfSaveOptions::default()).unwrap_err();
    assert_eq!(again.code, ErrorCode::InvalidArgument, "{}", again.message);
    fs::remove_dir_all(&base).unwrap();
}

#[test]
fn bad_directories_are_refused_by_name() {
    let cfg = Config::from_json(QWEN3).unwrap();
    let model = Model::new(&cfg, Device::Cpu, &ModelOptions::default()).unwrap();
    let base = temp("bad");
    let dir = base.join("m");
    model.save_hf_dir(&dir, &HfSaveOptions::default()).unwrap();

    let config_path = dir.join("config.json");
    let good = fs::read_to_string(&config_path).unwrap();
    fs::write(&config_path, good.replace("Qwen3ForCausalLM", "PhiForCausalLM")).unwrap();
    let e = Model::from_hf_dir(&dir, &HfLoadOptions::default()).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidConfig);
    assert!(e.message.contains("PhiForCausalLM"), "{}", e.message);

    fs::write(&config_path, good.replace("\"intermediate_size\": 96", "\"intermediate_size\": 80")).unwrap();
    let e = Model::from_hf_dir(&dir, &HfLoadOptions::default()).unwrap_err();
    assert_eq!(e.code, ErrorCode::Mismatch);
    assert!(e.message.contains("model.safetensors") && e.message.contains("mlp.") && e.message.contains("80"), "{}", e.message);

    fs::write(&config_path, &good[..good.len() / 3]).unwrap();
    let e = Config::from_hf_dir(&dir, &HfLoadOptions::default()).unwrap_err();
    assert_eq!(e.code, ErrorCode::Parse);
    assert!(e.message.contains("config.json"), "{}", e.message);
    fs::remove_dir_all(&base).unwrap();
}
