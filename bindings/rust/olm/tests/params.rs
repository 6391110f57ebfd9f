//! Parameters by name, DLPack exchange, the thread count and loss_div_factor's "unset".
use olm::{Config, Device, DlPack, ErrorCode, LossOptions, Model, ModelOptions, Tensor, TrainConfig, Trainer};

const TINY: &str = r#"{"d_model": 32, "vocab_size": 64, "n_layers": 2,
 "block": {"name": "reordered_norm",
   "attention": {"n_heads": 4, "bias": false, "rope": {"theta": 500000}, "qk_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
   "feed_forward": {"hidden_size": 96, "bias": false},
   "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
 "lm_head": {"layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "bias": false}}"#;

const TINY_MOE: &str = r#"{"name": "moe", "d_model": 32, "vocab_size": 64, "n_layers": 2,
 "block": {"name": "moe", "attention": {"n_heads": 4, "bias": false},
   "feed_forward_moe": {"name": "dropless", "num_experts": 4, "hidden_size": 16, "router": {"top_k": 2},
                        "lb_loss_weight": 0.01, "z_loss_weight": 0.001},
   "layer_norm": {"name": "rms", "bias": false}},
 "lm_head": {"bias": false}}"#;

const WQ: &str = "blocks.0.attention.w_q.weight";

fn ids(n: usize, modulo: i64) -> Vec<i64> {
    (0..n as i64).map(|i| (i * 7 + 3) % modulo).collect()
}

mod common;
use common::expect_err;

#[test]
fn parameters_by_name() {
    let cfg = Config::from_json(TINY).unwrap();
    let mut model = Model::new(&cfg, Device::Cpu, &ModelOptions::default()).unwrap();
    for info in model.parameters().unwrap() {
        let p = model.parameter(&info.name).unwrap();
        assert_eq!(p.dtype().unwrap(), info.dtype, "{}", info.name);
        assert_eq!(p.shape().unwrap(), info.shape, "{}", info.name);
    }
    let values: Vec<f32> = (0..32 * 32).map(|i| (i % 97) as f32 * 0.001 - 0.05).collect();
    let v = Tensor::from_f32(&values, &[32, 32]).unwrap();
    model.set_parameter(WQ, &v).unwrap();
    assert_eq!(model.parameter(WQ).unwrap().to_vec_f32().unwrap(), values);
    expect_err(model.parameter("blocks.0.attention.wq.weight"), ErrorCode::InvalidArgument, &format!("did you mean \"{WQ}\""));
    expect_err(model.parameter("a\0b"), ErrorCode::InvalidArgument, "name: contains a NUL byte");
    let wrong = Tensor::from_f32(&vec![0.0; 16 * 32], &[16, 32]).unwrap();
    expect_err(model.set_parameter(WQ, &wrong), ErrorCode::InvalidArgument, "value: shape [16, 32]");
    let ints = Tensor::from_i64(&vec![0; 32 * 32], &[32, 32]).unwrap();
    expect_err(model.set_parameter(WQ, &ints), ErrorCode::InvalidArgument, "value: dtype");
    assert_eq!(model.parameter(WQ).unwrap().to_vec_f32().unwrap(), values, "unchanged after refusals");
}

#[test]
fn set_parameter_keeps_the_optimizer_state() {
    let tcfg = TrainConfig::from_json(&format!(
        r#"{{"model": {TINY}, "sequence_length": 8, "global_batch_size": 16, "max_steps": 4,
        "optimizer": {{"name": "adamw", "lr": 0.01}}}}"#
    ))
    .unwrap();
    let cfg = tcfg.model().unwrap();
    let mut a = Model::new(&cfg, Device::Cpu, &ModelOptions::default()).unwrap();
    let mut b = Model::new(&cfg, Device::Cpu, &ModelOptions::default()).unwrap();
    let mut ta = Trainer::new(&mut a, &tcfg).unwrap();
    let mut tb = Trainer::new(&mut b, &tcfg).unwrap();
    let x = Tensor::from_i64(&ids(16, 64), &[2, 8]).unwrap();
    ta.step(&x, None).unwrap();
    tb.step(&x, None).unwrap();
    let same = tb.model().parameter(WQ).unwrap();
    tb.model_mut().set_parameter(WQ, &same).unwrap();
    assert_eq!(ta.step(&x, None).unwrap().loss, tb.step(&x, None).unwrap().loss);
    assert_eq!(
        ta.model().parameter(WQ).unwrap().to_vec_f32().unwrap(),
        tb.model().parameter(WQ).unwrap().to_vec_f32().unwrap()
    );
}

#[test]
fn dlpack_round_trip_is_zero_copy() {
    let src = Tensor::from_f32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
    let dl = src.to_dlpack().unwrap();
    assert_eq!(dl.shape(), vec![2, 3]);
    let data = dl.data_ptr();
    // SAFETY: the export holds six float32 values on the host.
    unsafe { *(data as *mut f32).add(4) = 50.0 };
    assert_eq!(src.to_vec_f32().unwrap()[4], 50.0, "the export shares the tensor's memory");
    let back = Tensor::from_dlpack(dl).unwrap();
    drop(src);
    let again = back.to_dlpack().unwrap();
    assert_eq!(again.data_ptr(), data, "import and export copy nothing");
    drop(back);
    // SAFETY: `again` keeps the memory alive.
    assert_eq!(unsafe { *(again.data_ptr() as *const f32).add(4) }, 50.0);
    // A raw pointer out and back in.
    let raw = again.into_raw();
    let dl = unsafe { DlPack::from_raw(raw) }.unwrap();
    assert_eq!(Tensor::from_dlpack(dl).unwrap().to_vec_f32().unwrap(), vec![1.0, 2.0, 3.0, 4.0, 50.0, 6.0]);
    assert!(unsafe { DlPack::from_raw(std::ptr::null_mut()) }.is_none());
}

#[test]
fn num_threads_is_process_wide() {
    let original = olm::num_threads();
    assert!(original >= 1);
    expect_err(olm::set_num_threads(0), ErrorCode::InvalidArgument, "num_threads: 0 is outside [1, 1024]");
    expect_err(olm::set_num_threads(1025), ErrorCode::InvalidArgument, "num_threads: 1025");
    let target = if original == 1 { 2 } else { 1 };
    olm::set_num_threads(target).unwrap();
    assert_eq!(olm::num_threads(), target);
    assert_eq!(std::thread::spawn(olm::num_threads).join().unwrap(), target);
    olm::set_num_threads(original).unwrap();
    assert_eq!(olm::num_threads(), original);
}

#[test]
fn loss_div_factor_zero_is_unset_and_one_divides() {
    let cfg = Config::from_json(TINY_MOE).unwrap();
    let model = Model::new(&cfg, Device::Cpu, &ModelOptions::default()).unwrap();
    let x = Tensor::from_i64(&ids(16, 64), &[2, 8]).unwrap();
    let unset = model.loss(&x, &x, &LossOptions::default()).unwrap();
    let zero = model.loss(&x, &x, &LossOptions::default().loss_div_factor(0.0)).unwrap();
    assert_eq!(zero.lb_loss_value, unset.lb_loss_value, "0 is the default: unset");
    // Unset divides the MoE losses by the 16 input tokens; 1 divides them by exactly 1.
    let one = model.loss(&x, &x, &LossOptions::default().loss_div_factor(1.0)).unwrap();
    assert!((one.lb_loss_value - 16.0 * unset.lb_loss_value).abs() < 1e-5);
    assert!((one.router_z_loss_value - 16.0 * unset.router_z_loss_value).abs() < 1e-5);
    assert!((one.loss_value - unset.loss_value).abs() < 1e-6);
    expect_err(
        model.loss(&x, &x, &LossOptions::default().loss_div_factor(f64::INFINITY)),
        ErrorCode::InvalidArgument,
        "loss_div_factor",
    );
}
