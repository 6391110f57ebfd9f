use olm::{
    Config, Dataset, DatasetOptions, Device, Dtype, ErrorCode, EvalOptions, FitOptions, ForwardOptions, GenerateOptions,
    LossOptions, Model, ModelOptions, Reduction, Tensor, TrainConfig, Trainer,
};

const TINY: &str = r#"{"d_model": 32, "vocab_size": 64, "n_layers": 2,
 "block": {"name": "reordered_norm",
   "attention": {"n_heads": 4, "bias": false, "rope": {"theta": 500000}, "qk_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
   "feed_forward": {"hidden_size": 96, "bias": false},
   "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
 "lm_head": {"layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "bias": false}}"#;

fn ids(n: usize, modulo: i64) -> Vec<i64> {
    (0..n as i64).map(|i| (i * 7 + 3) % modulo).collect()
}

mod common;
use common::expect_err;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("olm-rust-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn version_and_devices() {
    assert_eq!(olm::version(), "0.1.0");
    assert!(olm::cuda_device_count() >= 0);
}

#[test]
fn configs() {
    let cfg = Config::from_preset("olmo2_30M", 16384).unwrap();
    // The numbers OLMo-core computes for this preset and vocabulary.
    assert_eq!(cfg.num_params().unwrap(), (11800832, 7606528));
    assert!(cfg.num_flops_per_token(256).unwrap() > 6 * 7606528);
    expect_err(cfg.num_flops_per_token(0), ErrorCode::InvalidArgument, "seq_len");
    let json = cfg.to_json().unwrap();
    assert_eq!(Config::from_json(&json).unwrap().to_json().unwrap(), json);
    let fb = cfg.to_flatbuffer().unwrap();
    assert_eq!(Config::from_flatbuffer(&fb).unwrap().to_flatbuffer().unwrap(), fb);

    expect_err(Config::from_preset("olmo9_1T", 100), ErrorCode::InvalidArgument, "olmo2_30M");
    expect_err(Config::from_preset("bad\0name", 100), ErrorCode::InvalidArgument, "NUL");
    expect_err(Config::from_json("{\"d_model\": 8,"), ErrorCode::Parse, "config JSON");
    expect_err(Config::from_json(&TINY.replace("\"n_layers\": 2", "\"n_layers\": 2, \"bogus\": 1")), ErrorCode::Parse, "bogus");
    expect_err(Config::from_json(&TINY.replace("\"d_model\": 32", "\"d_model\": \"x\"")), ErrorCode::Parse, "d_model");
    expect_err(Config::from_json(&TINY.replace("\"d_model\": 32", "\"d_model\": 30")), ErrorCode::InvalidConfig, "d_model");
    expect_err(Config::from_flatbuffer(b"not a flatbuffer"), ErrorCode::Parse, "FlatBuffer");
    expect_err(Config::from_flatbuffer(&fb[..fb.len() / 2]), ErrorCode::Parse, "FlatBuffer");
    expect_err(Config::from_flatbuffer(&[]), ErrorCode::Parse, "FlatBuffer");
}

#[test]
fn tensors() {
    let t = Tensor::from_i64(&[1, 2, 3, 4, 5, 6], &[2, 3]).unwrap();
    assert_eq!(t.dtype().unwrap(), Dtype::Int64);
    assert_eq!(t.shape().unwrap(), vec![2, 3]);
    assert_eq!(t.to_vec_i64().unwrap(), vec![1, 2, 3, 4, 5, 6]);
    let f = Tensor::from_f32(&[1.5, -2.0], &[2]).unwrap();
    assert_eq!(f.to_vec_f32().unwrap(), vec![1.5, -2.0]);
    assert_eq!(Tensor::from_i32(&[7], &[1]).unwrap().to_vec_i32().unwrap(), vec![7]);
    let scalar = Tensor::from_f32(&[3.0], &[]).unwrap();
    assert_eq!(scalar.shape().unwrap(), Vec::<i64>::new());
    expect_err(f.to_vec_i64(), ErrorCode::InvalidArgument, "dtype");
    expect_err(Tensor::from_i64(&[1, 2, 3], &[2, 2]), ErrorCode::InvalidArgument, "data_size");
    expect_err(Tensor::from_i64(&[], &[-1]), ErrorCode::InvalidArgument, "negative");
    expect_err(Tensor::from_i64(&[0; 1], &[1; 9]), ErrorCode::InvalidArgument, "OLM_MAX_DIMS");
}

#[test]
fn model_forward_loss_and_weights() {
    let cfg = Config::from_json(TINY).unwrap();
    let model = Model::new(&cfg, Device::Cpu, &ModelOptions::default()).unwrap();
    let x = Tensor::from_i64(&ids(16, 64), &[2, 8]).unwrap();
    let logits = model.forward(&x).unwrap();
    assert_eq!(logits.shape().unwrap(), vec![2, 8, 64]);
    let values = logits.to_vec_f32().unwrap();
    assert!(values.iter().all(|v| v.is_finite()));
    let last = model.forward_with(&x, &ForwardOptions::default().logits_to_keep(3)).unwrap();
    assert_eq!(last.shape().unwrap(), vec![2, 3, 64]);
    // The last 3 positions of the full logits.
    let tail = last.to_vec_f32().unwrap();
    assert_eq!(&tail[..3 * 64], &values[5 * 64..8 * 64]);

    // One target per row; mean over targets equals the mean of the 'none' losses there.
    let mut lab = ids(16, 64);
    for (i, l) in lab.iter_mut().enumerate() {
        if i % 8 != 2 {
            *l = -100;
        }
    }
    let labels = Tensor::from_i64(&lab, &[2, 8]).unwrap();
    let mean = model.loss(&x, &labels, &LossOptions::default().z_loss_multiplier(1e-4)).unwrap();
    let none = model.loss(&x, &labels, &LossOptions::default().reduction(Reduction::None)).unwrap();
    let per = none.ce_loss.to_vec_f32().unwrap();
    assert_eq!(none.ce_loss.shape().unwrap(), vec![2, 8]);
    let want = (per[2] as f64 + per[10] as f64) / 2.0;
    assert!((mean.ce_loss_value - want).abs() < 1e-5, "{} vs {want}", mean.ce_loss_value);
    assert!(mean.z_loss.is_some() && mean.z_loss_value > 0.0);
    assert!((mean.loss_value - mean.ce_loss_value - mean.z_loss_value).abs() < 1e-6);
    assert!(none.z_loss.is_none() && none.logits.is_none());
    let divided = model.loss(&x, &labels, &LossOptions::default().loss_div_factor(4.0).return_logits(true)).unwrap();
    assert!((divided.ce_loss_value * 4.0 - mean.ce_loss_value).abs() < 1e-5);
    assert_eq!(divided.logits.unwrap().to_vec_f32().unwrap(), values);

    let oov = Tensor::from_i64(&[1, 2, 64, 3], &[1, 4]).unwrap();
    expect_err(model.forward(&oov), ErrorCode::InvalidArgument, "input_ids");
    expect_err(model.forward(&Tensor::from_i64(&[1, 2], &[2]).unwrap()), ErrorCode::InvalidArgument, "shape");
    expect_err(model.forward(&Tensor::from_f32(&[1.0], &[1, 1]).unwrap()), ErrorCode::InvalidArgument, "dtype");
    expect_err(model.forward_with(&x, &ForwardOptions::default().logits_to_keep(9)), ErrorCode::InvalidArgument, "logits_to_keep");
    let bad_labels = Tensor::from_i64(&vec![-5; 16], &[2, 8]).unwrap();
    expect_err(model.loss(&x, &bad_labels, &LossOptions::default()), ErrorCode::InvalidArgument, "labels");
    expect_err(model.loss(&x, &labels, &LossOptions::default().loss_div_factor(f64::NAN)), ErrorCode::InvalidArgument, "loss_div_factor");

    let params = model.parameters().unwrap();
    assert_eq!(params[0].name, "embeddings.weight");
    assert!(params.iter().any(|p| p.name == "blocks.1.attention.q_norm.weight"));
    let total: i64 = params.iter().map(|p| p.shape.iter().product::<i64>()).sum();
    assert_eq!(total, model.num_params().unwrap());
    assert_eq!(total, cfg.num_params().unwrap().0);

    let dir = temp_dir("weights");
    let path = dir.join("w.safetensors");
    model.save_safetensors(&path).unwrap();
    let mut empty = Model::new(&cfg, Device::Cpu, &ModelOptions::default().init_weights(false)).unwrap();
    empty.load_safetensors(&path).unwrap();
    assert_eq!(empty.forward(&x).unwrap().to_vec_f32().unwrap(), values, "save/load must be exact");
    expect_err(empty.load_safetensors(dir.join("missing.safetensors")), ErrorCode::Io, "missing.safetensors");
    let other = Model::new(&Config::from_preset("olmo2_1M", 64).unwrap(), Device::Cpu, &ModelOptions::default()).unwrap();
    let other_path = dir.join("other.safetensors");
    other.save_safetensors(&other_path).unwrap();
    expect_err(empty.load_safetensors(&other_path), ErrorCode::Mismatch, "tensor");
    assert_eq!(empty.forward(&x).unwrap().to_vec_f32().unwrap(), values, "a failed load leaves the model alone");
    expect_err("gpu".parse::<Device>(), ErrorCode::InvalidArgument, "device");
    if olm::cuda_device_count() == 0 {
        expect_err(Model::new(&cfg, Device::Cuda(0), &ModelOptions::default()), ErrorCode::DeviceUnavailable, "CUDA");
    }
    let bf16 = Model::new(&cfg, Device::Cpu, &ModelOptions::default().param_dtype(Some(Dtype::BFloat16))).unwrap();
    assert_eq!(bf16.parameters().unwrap()[0].dtype, Dtype::BFloat16);
    assert!(params.iter().all(|p| p.trainable));
    let frozen_cfg = Config::from_json(&TINY.replace("\"n_layers\": 2", "\"n_layers\": 2, \"freeze_params\": [\"blocks.0.*\"]")).unwrap();
    let frozen = Model::new(&frozen_cfg, Device::Cpu, &ModelOptions::default()).unwrap();
    for p in frozen.parameters().unwrap() {
        assert_eq!(p.trainable, !p.name.starts_with("blocks.0."), "{}", p.name);
    }
}

#[test]
fn normalized_transformer_renormalizes() {
    let ngpt = r#"{"name": "normalized", "d_model": 32, "vocab_size": 64, "n_layers": 2, "init_method": "normalized",
 "block": {"name": "normalized", "attention": {"name": "normalized", "n_heads": 4, "qk_norm": {"name": "l2_norm"},
   "rope": {"theta": 500000}}, "feed_forward": {"name": "normalized", "hidden_size": 96}},
 "lm_head": {"name": "normalized"}}"#;
    let cfg = Config::from_json(ngpt).unwrap();
    let mut model = Model::new(&cfg, Device::Cpu, &ModelOptions::default()).unwrap();
    let x = Tensor::from_i64(&ids(8, 64), &[1, 8]).unwrap();
    let before = model.forward(&x).unwrap().to_vec_f32().unwrap();
    model.normalize_matrices().unwrap();
    let after = model.forward(&x).unwrap().to_vec_f32().unwrap();
    assert!(before.iter().zip(&after).all(|(a, b)| (a - b).abs() < 1e-4));
    let mut plain = Model::new(&Config::from_json(TINY).unwrap(), Device::Cpu, &ModelOptions::default()).unwrap();
    expect_err(plain.normalize_matrices(), ErrorCode::InvalidArgument, "not a normalized");
}

#[test]
fn generation_streams_and_stops() {
    let cfg = Config::from_json(TINY).unwrap();
    let mut model = Model::new(&cfg, Device::Cpu, &ModelOptions::default()).unwrap();
    let prompt = Tensor::from_i64(&[1, 2, 3], &[3]).unwrap();
    let greedy = GenerateOptions::default().max_new_tokens(10).temperature(0.0);
    let mut streamed = Vec::new();
    let mut collect = |t: i64| {
        streamed.push(t);
        true
    };
    let out = model.generate(&prompt, &greedy, Some(&mut collect)).unwrap();
    assert_eq!(out.len(), 10);
    assert_eq!(out, streamed);
    let uncached = model.generate(&prompt, &greedy.clone().use_kv_cache(false), None).unwrap();
    assert_eq!(uncached, out);
    let mut stop_now = |_t: i64| false;
    assert_eq!(model.generate(&prompt, &greedy, Some(&mut stop_now)).unwrap().len(), 1);
    let stopped = model.generate(&prompt, &greedy.clone().stop_tokens(&[out[4]]), None).unwrap();
    assert_eq!(*stopped.last().unwrap(), out[4]);
    assert!(stopped.len() <= 5);
    let sampled = GenerateOptions::default().max_new_tokens(20).temperature(1.0).top_k(10).top_p(0.9).seed(3);
    let first = model.generate(&prompt, &sampled, None).unwrap();
    assert_eq!(first, model.generate(&prompt, &sampled, None).unwrap());
    expect_err(model.generate(&prompt, &greedy.clone().temperature(-1.0), None), ErrorCode::InvalidArgument, "temperature");
    // A panic in the callback never crosses C: it comes back here once libolm returns.
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut boom = |_t: i64| -> bool { panic!("boom") };
        let _ = model.generate(&prompt, &greedy, Some(&mut boom));
    }));
    assert!(caught.is_err());
    assert_eq!(model.generate(&prompt, &greedy, None).unwrap(), out, "the model still works");
}

fn train_json(extra: &str) -> String {
    format!(
        r#"{{"model": {TINY}, "sequence_length": 8, "global_batch_size": 32, "rank_microbatch_size": 16,
        "max_steps": 4, "optimizer": {{"name": "adamw", "lr": 0.01}}{extra}}}"#
    )
}

#[test]
fn training_data_and_checkpoints() {
    let tcfg = TrainConfig::from_json(&train_json("")).unwrap();
    let fb = tcfg.to_flatbuffer().unwrap();
    assert_eq!(TrainConfig::from_flatbuffer(&fb).unwrap().to_flatbuffer().unwrap(), fb);
    assert!(tcfg.to_json().unwrap().contains("sequence_length"));
    expect_err(TrainConfig::from_json(&train_json(r#", "ac_mode": "sometimes""#)), ErrorCode::InvalidConfig, "ac_mode");
    expect_err(TrainConfig::from_flatbuffer(&[1, 2, 3]), ErrorCode::Parse, "train config");
    let cfg = tcfg.model().unwrap();
    let mut model = Model::new(&cfg, Device::Cpu, &ModelOptions::default()).unwrap();
    let mut trainer = Trainer::new(&mut model, &tcfg).unwrap();

    let x = Tensor::from_i64(&ids(32, 64), &[4, 8]).unwrap();
    let first = trainer.step(&x, None).unwrap();
    let second = trainer.step(&x, None).unwrap();
    assert_eq!((first.step, second.step, first.tokens), (1, 2, 32));
    assert!(second.loss < first.loss && !first.skipped);
    let wrong = Tensor::from_i64(&ids(32, 64), &[2, 16]).unwrap();
    expect_err(trainer.step(&wrong, None), ErrorCode::InvalidArgument, "sequence_length");
    let no_targets = Tensor::from_i64(&vec![-100; 32], &[4, 8]).unwrap();
    let skipped = trainer.step(&x, Some(&no_targets)).unwrap();
    assert!(skipped.skipped && skipped.loss.is_nan() && skipped.skipped_steps == 1);

    let dir = temp_dir("ckpt");
    let path = trainer.save_checkpoint(&dir).unwrap();
    assert!(path.ends_with("step3"), "{path}");
    let next = trainer.step(&x, None).unwrap();
    let mut model2 = Model::new(&cfg, Device::Cpu, &ModelOptions::default().init_weights(false)).unwrap();
    let mut trainer2 = Trainer::new(&mut model2, &tcfg).unwrap();
    trainer2.load_checkpoint(&dir).unwrap();
    let resumed = trainer2.step(&x, None).unwrap();
    assert_eq!((resumed.step, resumed.loss), (next.step, next.loss), "resume must be exact");
    expect_err(trainer2.load_checkpoint(dir.join("nothing")), ErrorCode::Io, "no checkpoint");

    let data = Dataset::from_tokens(&ids(8 * 20, 64), &DatasetOptions::new(8, 64).eos_token_id(0)).unwrap();
    assert_eq!(data.size().unwrap(), (160, 20));
    let batch = data.batch(&[0, 1]).unwrap();
    let (inputs, labels) = (batch.input_ids.to_vec_i64().unwrap(), batch.labels.to_vec_i64().unwrap());
    assert_eq!(labels[0], inputs[1]);
    assert_eq!(labels[7], -100);
    assert!(batch.cu_doc_lens.is_some());
    expect_err(data.batch(&[20]), ErrorCode::InvalidArgument, "indices[0]");
    expect_err(Dataset::from_tokens(&[1, 2, 99], &DatasetOptions::new(2, 64)), ErrorCode::InvalidArgument, "tokens[2]");
    let file = dir.join("tokens.bin");
    let bytes: Vec<u8> = ids(32, 64).iter().flat_map(|&t| (t as u16).to_le_bytes()).collect();
    std::fs::write(&file, &bytes).unwrap();
    let from_files = Dataset::from_files(&[&file, &file], &DatasetOptions::new(8, 64)).unwrap();
    assert_eq!(from_files.size().unwrap(), (64, 8));
    std::fs::write(dir.join("odd.bin"), &bytes[..3]).unwrap();
    expect_err(Dataset::from_files(&[dir.join("odd.bin")], &DatasetOptions::new(8, 64)), ErrorCode::Parse, "multiple of 2");
    expect_err(Dataset::from_files(&[dir.join("none.bin")], &DatasetOptions::new(8, 64)), ErrorCode::Io, "none.bin");

    let mut model3 = Model::new(&cfg, Device::Cpu, &ModelOptions::default()).unwrap();
    let mut trainer3 = Trainer::new(&mut model3, &tcfg).unwrap();
    let mut losses = Vec::new();
    let mut on_step = |m: &olm::StepMetrics| {
        losses.push(m.loss);
        m.step < 3
    };
    let mut logs = Vec::new();
    let mut on_log = |s: &str| logs.push(s.to_string());
    trainer3
        .fit(&data, FitOptions::default().eval_data(&data).on_step(&mut on_step).on_log(&mut on_log))
        .unwrap();
    assert_eq!(losses.len(), 3, "the step callback stops training");
    let eval = trainer3.evaluate(&data, &EvalOptions::default().max_batches(1)).unwrap();
    let all = trainer3.evaluate(&data, &EvalOptions::default()).unwrap();
    assert!(all.tokens > eval.tokens, "{all:?} vs {eval:?}");
    expect_err(trainer3.evaluate(&data, &EvalOptions::default().max_batches(0)), ErrorCode::InvalidArgument, "max_batches");
    assert!(eval.tokens > 0 && (eval.perplexity - eval.loss.exp()).abs() < 1e-6 * eval.perplexity);
}

// fit_from_config trains on the train config's data section, as `olm train` does.
#[test]
fn fit_from_the_configs_data() {
    let dir = temp_dir("fit-config-data");
    let file = dir.join("tokens.bin");
    let bytes: Vec<u8> = (0..2000u32).flat_map(|i| (((i * 13 + i / 7) % 64) as u16).to_le_bytes()).collect();
    std::fs::write(&file, &bytes).unwrap();
    let run = dir.join("run");
    let tcfg = TrainConfig::from_json(&train_json(&format!(
        r#", "data": {{"paths": ["{}"]}}, "eval_data": {{"paths": ["{}"]}}, "eval_batches": 1, "save_folder": "{}""#,
        file.display(),
        file.display(),
        run.display()
    )))
    .unwrap();
    let cfg = tcfg.model().unwrap();
    let mut model = Model::new(&cfg, Device::Cpu, &ModelOptions::default()).unwrap();
    let mut trainer = Trainer::new(&mut model, &tcfg).unwrap();
    let mut steps = 0;
    let mut on_step = |_m: &olm::StepMetrics| {
        steps += 1;
        true
    };
    let eval = trainer.fit_from_config(FitOptions::default().on_step(&mut on_step)).unwrap();
    assert_eq!(steps, 4);
    assert!(eval.tokens > 0, "the config's eval_data was evaluated");
    assert!(run.join("step4").join("meta.olmk").exists());
    expect_err(trainer.fit_from_config(FitOptions::default()), ErrorCode::InvalidArgument, "max_steps");
}

#[test]
fn handles_move_between_threads() {
    let cfg = Config::from_json(TINY).unwrap();
    let model = Model::new(&cfg, Device::Cpu, &ModelOptions::default()).unwrap();
    let x = Tensor::from_i64(&ids(8, 64), &[1, 8]).unwrap();
    let here = model.forward(&x).unwrap().to_vec_f32().unwrap();
    let there = std::thread::spawn(move || model.forward(&x).unwrap().to_vec_f32().unwrap()).join().unwrap();
    assert_eq!(here, there);
}

fn assert_send<T: Send>() {}
fn assert_sync<T: Sync>() {}

// Handles are Send; datasets (immutable, thread-safe in olm.h) are also Sync. What must not
// compile (a model shared between threads, a model used while its trainer lives, a group used
// while a trainer holds it, a generate callback that calls back into its model) is proven by
// the compile_fail examples in the crate's documentation.
#[test]
fn send_and_sync() {
    assert_send::<Config>();
    assert_send::<Model>();
    assert_send::<Tensor>();
    assert_send::<TrainConfig>();
    assert_send::<Trainer<'static>>();
    assert_send::<Dataset>();
    assert_send::<olm::Dist>();
    assert_sync::<Dataset>();
}

// A trainer moves to another thread together with the model it borrows; afterwards the model
// is free again. One dataset is read from two threads at once.
#[test]
fn trainer_moves_with_its_model_and_datasets_are_shared() {
    let tcfg = TrainConfig::from_json(&train_json("")).unwrap();
    let mut model = Model::new(&tcfg.model().unwrap(), Device::Cpu, &ModelOptions::default()).unwrap();
    let data = Dataset::from_tokens(&ids(8 * 20, 64), &DatasetOptions::new(8, 64)).unwrap();
    let x = Tensor::from_i64(&ids(32, 64), &[4, 8]).unwrap();
    let before = model.forward(&x).unwrap().to_vec_f32().unwrap();
    let mut trainer = Trainer::new(&mut model, &tcfg).unwrap();
    let (losses, sizes) = std::thread::scope(|s| {
        let data = &data;
        let counting = s.spawn(move || (0..4).map(|_| data.size().unwrap()).collect::<Vec<_>>());
        let training = s.spawn(move || {
            let batch = data.batch(&[0, 1, 2, 3]).unwrap();
            let first = trainer.step(&batch.input_ids, Some(&batch.labels)).unwrap().loss;
            let second = trainer.step(&batch.input_ids, Some(&batch.labels)).unwrap().loss;
            (first, second)
        });
        (training.join().unwrap(), counting.join().unwrap())
    });
    assert!(losses.1 < losses.0, "{losses:?}");
    assert!(sizes.iter().all(|&size| size == (160, 20)));
    let after = model.forward(&x).unwrap().to_vec_f32().unwrap();
    assert_ne!(before, after, "the trainer updated the model in place");
}

// The trainer lends its model between steps; once the trainer is dropped the model is free.
#[test]
fn trainer_lends_its_model() {
    let tcfg = TrainConfig::from_json(&train_json("")).unwrap();
    let mut model = Model::new(&tcfg.model().unwrap(), Device::Cpu, &ModelOptions::default()).unwrap();
    let x = Tensor::from_i64(&ids(32, 64), &[4, 8]).unwrap();
    let mut trainer = Trainer::new(&mut model, &tcfg).unwrap();
    assert!(trainer.dist().is_none());
    let before = trainer.model().forward(&x).unwrap().to_vec_f32().unwrap();
    trainer.step(&x, None).unwrap();
    let after = trainer.model().forward(&x).unwrap().to_vec_f32().unwrap();
    assert_ne!(before, after);
    let prompt = Tensor::from_i64(&[1, 2, 3], &[3]).unwrap();
    let greedy = GenerateOptions::default().max_new_tokens(4).temperature(0.0);
    let generated = trainer.model_mut().generate(&prompt, &greedy, None).unwrap();
    trainer.step(&x, None).unwrap();
    assert!(format!("{trainer:?}").starts_with("Trainer"));
    drop(trainer);
    assert_ne!(model.forward(&x).unwrap().to_vec_f32().unwrap(), after, "the second step changed the model");
    assert_eq!(generated.len(), 4);
}

#[test]
fn devices_errors_and_debug() {
    assert_eq!(Device::Cpu.to_string(), "cpu");
    assert_eq!(Device::Cuda(1).to_string(), "cuda:1");
    assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
    assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda(0));
    assert_eq!("cuda:3".parse::<Device>().unwrap(), Device::Cuda(3));
    for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "CPU"] {
        expect_err(bad.parse::<Device>(), ErrorCode::InvalidArgument, bad);
    }
    assert_eq!(Device::default(), Device::Cpu);

    let err = Config::from_preset("olmo9_1T", 100).unwrap_err();
    let shown = err.to_string();
    assert!(shown.starts_with("invalid argument: "), "{shown}");
    assert!(!shown.contains("olm:"), "no crate prefix: {shown}");
    assert!(shown.ends_with(&err.message), "{shown}");

    let t = Tensor::from_i64(&[1, 2, 3, 4, 5, 6], &[2, 3]).unwrap();
    assert_eq!(format!("{t:?}"), "Tensor { dtype: Int64, shape: [2, 3] }");
    let model = Model::new(&Config::from_json(TINY).unwrap(), Device::Cpu, &ModelOptions::default()).unwrap();
    assert!(format!("{model:?}").starts_with("Model("));
}

// Intra-document masking: each document of a packed row gets the logits of a forward over it
// alone (float32 rounding), through ForwardOptions and LossOptions.
#[test]
fn document_masking_matches_separate_documents() {
    let cfg = Config::from_json(TINY).unwrap();
    let model = Model::new(&cfg, Device::Cpu, &ModelOptions::default()).unwrap();
    let tokens = ids(16, 64);
    let x = Tensor::from_i64(&tokens, &[2, 8]).unwrap();
    let cu = Tensor::from_i32(&[0, 3, 8, 10, 16], &[5]).unwrap();
    let packed = model.forward_with(&x, &ForwardOptions::default().documents(&cu, 6)).unwrap().to_vec_f32().unwrap();
    let plain = model.forward_with(&x, &ForwardOptions::default()).unwrap().to_vec_f32().unwrap();
    assert_eq!(plain, model.forward(&x).unwrap().to_vec_f32().unwrap());
    let mut worst = 0f32;
    for (s, e) in [(0usize, 3usize), (3, 8), (8, 10), (10, 16)] {
        let alone = Tensor::from_i64(&tokens[s..e], &[1, (e - s) as i64]).unwrap();
        let got = model.forward(&alone).unwrap().to_vec_f32().unwrap();
        for (i, v) in got.iter().enumerate() {
            worst = worst.max((v - packed[s * 64 + i]).abs());
        }
    }
    assert!(worst < 1e-5, "packed vs separate: {worst}");
    assert!(plain.iter().zip(&packed).any(|(a, b)| (a - b).abs() > 1e-3), "masking must change later documents");
    let kept = model.forward_with(&x, &ForwardOptions::default().logits_to_keep(2).documents(&cu, 0)).unwrap();
    assert_eq!(kept.shape().unwrap(), vec![2, 2, 64]);

    let labels = Tensor::from_i64(&tokens, &[2, 8]).unwrap();
    let out = model.loss(&x, &labels, &LossOptions::default().return_logits(true).documents(&cu, 0)).unwrap();
    assert_eq!(out.logits.unwrap().to_vec_f32().unwrap(), packed);
    expect_err(model.forward_with(&x, &ForwardOptions::default().documents(&cu, 5)), ErrorCode::InvalidArgument, "max_doc_len");
    let crossing = Tensor::from_i64(&[0, 4, 12, 16], &[4]).unwrap();
    expect_err(
        model.loss(&x, &labels, &LossOptions::default().documents(&crossing, 0)),
        ErrorCode::InvalidArgument,
        "cu_doc_lens",
    );
}

// A training step with documents: its loss is the model's masked mean loss on that batch.
#[test]
fn trainer_step_with_documents() {
    let tcfg = TrainConfig::from_json(&train_json("")).unwrap();
    let cfg = tcfg.model().unwrap();
    let reference = Model::new(&cfg, Device::Cpu, &ModelOptions::default()).unwrap();
    let tokens = ids(32, 64);
    let x = Tensor::from_i64(&tokens, &[4, 8]).unwrap();
    let mut shifted = vec![-100i64; 32];
    for r in 0..4 {
        for t in 0..7 {
            shifted[r * 8 + t] = tokens[r * 8 + t + 1];
        }
    }
    let labels = Tensor::from_i64(&shifted, &[4, 8]).unwrap();
    let cu = Tensor::from_i32(&[0, 3, 8, 16, 17, 24, 28, 32], &[8]).unwrap();
    let masked = reference.loss(&x, &labels, &LossOptions::default().documents(&cu, 0)).unwrap().loss_value;
    let plain = reference.loss(&x, &labels, &LossOptions::default()).unwrap().loss_value;
    assert!((masked - plain).abs() > 1e-4);
    let mut model = Model::new(&cfg, Device::Cpu, &ModelOptions::default()).unwrap();
    let mut trainer = Trainer::new(&mut model, &tcfg).unwrap();
    let m = trainer.step_documents(&x, None, &cu).unwrap();
    assert!((m.loss - masked).abs() < 1e-5 * masked, "{} vs {masked}", m.loss);
    let crossing = Tensor::from_i64(&[0, 12, 32], &[3]).unwrap();
    expect_err(trainer.step_documents(&x, None, &crossing), ErrorCode::InvalidArgument, "cu_doc_lens");
}

// FitOptions::document_masking: unset follows the config (no generate_doc_lengths: unmasked),
// true masks documents and changes the first loss.
#[test]
fn fit_with_document_masking() {
    let tcfg = TrainConfig::from_json(&train_json("")).unwrap();
    let cfg = tcfg.model().unwrap();
    let tokens: Vec<i64> = (0..64i64).map(|i| if i % 3 == 2 { 0 } else { (i * 7 + 1) % 64 }).collect();
    let data = Dataset::from_tokens(&tokens, &DatasetOptions::new(8, 64).eos_token_id(0)).unwrap();
    let first_loss = |masking: Option<bool>| {
        let mut model = Model::new(&cfg, Device::Cpu, &ModelOptions::default()).unwrap();
        let mut trainer = Trainer::new(&mut model, &tcfg).unwrap();
        let mut losses = Vec::new();
        let mut on_step = |m: &olm::StepMetrics| {
            losses.push(m.loss);
            false
        };
        let options = FitOptions::default().on_step(&mut on_step);
        let options = match masking {
            Some(on) => options.document_masking(on),
            None => options,
        };
        trainer.fit(&data, options).unwrap();
        losses[0]
    };
    let (config, off, on) = (first_loss(None), first_loss(Some(false)), first_loss(Some(true)));
    assert_eq!(config, off);
    assert!((on - off).abs() > 1e-4, "{on} vs {off}");
}

const TINY_MOE: &str = r#"{"name": "moe", "d_model": 32, "vocab_size": 64, "n_layers": 2,
 "block": {"name": "moe_reordered_norm",
   "attention": {"n_heads": 4, "bias": false, "rope": {"theta": 500000}},
   "feed_forward_moe": {"name": "dropless", "num_experts": 4, "hidden_size": 16, "router": {"top_k": 2},
                        "lb_loss_weight": 0.01, "z_loss_weight": 0.001},
   "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
 "lm_head": {"layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "bias": false}}"#;

#[test]
fn mixture_of_experts() {
    // TransformerConfig.olmoe_1B_7B(vocab_size=50304) in OLMo-core 3.0.0: num_params,
    // num_non_embedding_params, num_active_params, num_active_non_embedding_params.
    let olmoe = Config::from_preset("olmoe_1B_7B", 50304).unwrap();
    assert_eq!(olmoe.num_params().unwrap(), (6919161856, 6816139264));
    assert_eq!(olmoe.num_active_params().unwrap(), (1282017280, 1178994688));
    let dense = Config::from_json(TINY).unwrap();
    assert_eq!(dense.num_active_params().unwrap(), dense.num_params().unwrap());
    expect_err(
        Config::from_json(&TINY_MOE.replace("\"top_k\": 2", "\"top_k\": 5")),
        ErrorCode::InvalidConfig,
        "block.feed_forward_moe.router.top_k",
    );

    let cfg = Config::from_json(TINY_MOE).unwrap();
    let model = Model::new(&cfg, Device::Cpu, &ModelOptions::default()).unwrap();
    let x = Tensor::from_i64(&ids(16, 64), &[2, 8]).unwrap();
    let out = model.loss(&x, &x, &LossOptions::default()).unwrap();
    assert!(out.lb_loss.is_some() && out.router_z_loss.is_some());
    assert!(out.lb_loss_value > 0.0 && out.router_z_loss_value > 0.0);
    // Not part of loss; divided by the 16 input tokens unless loss_div_factor is given.
    assert!((out.loss_value - out.ce_loss_value).abs() < 1e-6);
    let divided = model.loss(&x, &x, &LossOptions::default().loss_div_factor(4.0)).unwrap();
    assert!((divided.lb_loss_value * 4.0 - out.lb_loss_value * 16.0).abs() < 1e-6);
    assert!((divided.router_z_loss_value * 4.0 - out.router_z_loss_value * 16.0).abs() < 1e-6);
    let dense_model = Model::new(&dense, Device::Cpu, &ModelOptions::default()).unwrap();
    let plain = dense_model.loss(&x, &x, &LossOptions::default()).unwrap();
    assert!(plain.lb_loss.is_none() && plain.lb_loss_value == 0.0);

    let tcfg = TrainConfig::from_json(&format!(
        r#"{{"model": {TINY_MOE}, "sequence_length": 8, "global_batch_size": 16, "max_steps": 2,
        "optimizer": {{"name": "adamw", "lr": 0.01}}}}"#
    ))
    .unwrap();
    let mut model = Model::new(&tcfg.model().unwrap(), Device::Cpu, &ModelOptions::default()).unwrap();
    let mut trainer = Trainer::new(&mut model, &tcfg).unwrap();
    let m = trainer.step(&x, None).unwrap();
    assert!(m.lb_loss > 0.0 && m.router_z_loss > 0.0 && m.ce_loss > 0.0);
    assert!((m.loss - m.ce_loss - m.z_loss).abs() < 1e-9);
}

/// Zeroes the Mersenne Twister position (bytes 8..15 of LibTorch's 5056-byte CPU generator
/// state, found by its FlatBuffers length prefix) in a checkpoint's meta.olmk: without the
/// metadata's checksum LibTorch refused it only after the weights and counters were restored.
fn zero_rng_position(meta: &std::path::Path) {
    let mut bytes = std::fs::read(meta).unwrap();
    let at = bytes.windows(4).position(|w| w == 5056u32.to_le_bytes()).expect("no RNG state in meta.olmk");
    bytes[at + 12..at + 20].fill(0);
    std::fs::write(meta, bytes).unwrap();
}

#[test]
fn failed_checkpoint_load_leaves_the_trainer_usable() {
    let tcfg = TrainConfig::from_json(&train_json("")).unwrap();
    let cfg = tcfg.model().unwrap();
    let mut model = Model::new(&cfg, Device::Cpu, &ModelOptions::default()).unwrap();
    let mut trainer = Trainer::new(&mut model, &tcfg).unwrap();
    let x = Tensor::from_i64(&ids(32, 64), &[4, 8]).unwrap();
    let (dir, good) = (temp_dir("ckpt-damaged"), temp_dir("ckpt-good"));
    trainer.step(&x, None).unwrap();
    trainer.save_checkpoint(&dir).unwrap();
    trainer.step(&x, None).unwrap();
    trainer.save_checkpoint(&good).unwrap();
    zero_rng_position(&dir.join("step1").join("meta.olmk"));

    expect_err(trainer.load_checkpoint(&dir), ErrorCode::Parse, "meta.olmk");
    let after = trainer.step(&x, None).unwrap();
    let mut model2 = Model::new(&cfg, Device::Cpu, &ModelOptions::default().init_weights(false)).unwrap();
    let mut trainer2 = Trainer::new(&mut model2, &tcfg).unwrap();
    trainer2.load_checkpoint(&good).unwrap();
    let want = trainer2.step(&x, None).unwrap();
    assert_eq!((after.step, after.loss), (3, want.loss), "the refused load changed the trainer");
}
