//! Data-parallel training through the safe API: this test binary launches itself twice as
//! ranks 0 and 1 (Gloo over loopback), and both must reproduce the single-process losses of
//! the same global batches.
use olm::{Config, Device, Dist, DistBackend, DistOptions, ErrorCode, Model, ModelOptions, Tensor, TrainConfig, Trainer};
use std::process::Command;
use std::time::{Duration, Instant};

const TINY: &str = r#"{"d_model": 32, "vocab_size": 64, "n_layers": 2,
 "block": {"name": "reordered_norm",
   "attention": {"n_heads": 4, "bias": false, "rope": {"theta": 500000}, "qk_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
   "feed_forward": {"hidden_size": 96, "bias": false},
   "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
 "lm_head": {"layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "bias": false}}"#;
const TRAIN: &str = r#"{"sequence_length": 8, "global_batch_size": 32, "rank_microbatch_size": 8, "max_steps": 5,
 "optimizer": {"name": "adamw", "lr": 0.003}}"#;
const STEPS: usize = 5;
// FSDP: the same numbers with parameters and optimizer state sharded over the ranks.
const FSDP: &str = r#", "data_parallel": {"name": "fsdp"}}"#;
// Tensor parallelism: both ranks take the whole batch and hold half of every split matrix.
const TP: &str = r#", "tensor_parallel": {"degree": 2}}"#;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Layout {
    DataParallel,
    Fsdp,
    TensorParallel,
}

fn train_config(layout: Layout) -> TrainConfig {
    let json = match layout {
        Layout::DataParallel => TRAIN.to_string(),
        Layout::Fsdp => format!("{}{}", &TRAIN[..TRAIN.len() - 1], FSDP),
        Layout::TensorParallel => format!("{}{}", &TRAIN[..TRAIN.len() - 1], TP),
    };
    TrainConfig::from_json(&json).unwrap()
}

// Global batch s: 4 instances of 8 tokens; rank r of 2 takes instances [2r, 2r + 2).
fn global_batch(step: usize) -> Vec<i64> {
    (0..32).map(|i| ((i as i64) * 7 + (step as i64) * 13 + 3) % 64).collect()
}

fn train(dist: Option<&mut Dist>, rank: usize, world: usize, layout: Layout) -> Vec<f64> {
    let fsdp = layout == Layout::Fsdp;
    let mut model = Model::new(&Config::from_json(TINY).unwrap(), Device::Cpu, &ModelOptions::default()).unwrap();
    let mut trainer = Trainer::new(&mut model, &train_config(layout)).unwrap();
    let distributed = dist.is_some();
    trainer.set_dist(dist).unwrap();
    assert_eq!(trainer.dist().map(|d| d.info().unwrap().world_size), distributed.then_some(world as i64));
    if fsdp && distributed {
        // Sharded parameters: every rank saves its pieces (a collective, into a folder both
        // ranks share: the one holding their result files).
        let out = std::env::var("OLM_RUST_DIST_OUT").unwrap();
        let folder = std::path::Path::new(&out).parent().unwrap().join("fsdp-checkpoints");
        let saved = trainer.save_checkpoint(&folder).unwrap();
        assert!(std::path::Path::new(&saved).join(format!("rank{rank}.safetensors")).exists(), "{saved}");
    }
    // The ranks of one tensor-parallel group take the same part of each global batch.
    let mesh = trainer.layout().unwrap();
    let tp = layout == Layout::TensorParallel && distributed;
    assert_eq!((mesh.tensor_parallel_rank, mesh.tensor_parallel_size), if tp { (rank as i64, 2) } else { (0, 1) });
    assert_eq!(mesh.data_parallel_size, if tp { 1 } else { world as i64 });
    assert_eq!((mesh.context_parallel_rank, mesh.context_parallel_size), (0, 1));
    let (part, per_rank) = (mesh.data_parallel_rank as usize, 32 / mesh.data_parallel_size as usize);
    (0..STEPS)
        .map(|s| {
            let ids = &global_batch(s)[part * per_rank..(part + 1) * per_rank];
            let t = Tensor::from_i64(ids, &[(per_rank / 8) as i64, 8]).unwrap();
            trainer.step(&t, None).unwrap().loss
        })
        .collect()
}

/// The rank's side: runs only when the parent test launched it.
#[test]
fn dist_worker() {
    let Ok(out) = std::env::var("OLM_RUST_DIST_OUT") else { return };
    let mut dist = Dist::new(&DistOptions::default().backend(DistBackend::Gloo).timeout_seconds(30.0)).unwrap();
    let info = dist.info().unwrap();
    let layout = match std::env::var("OLM_RUST_DIST_LAYOUT").as_deref() {
        Ok("fsdp") => Layout::Fsdp,
        Ok("tp") => Layout::TensorParallel,
        _ => Layout::DataParallel,
    };
    let losses = train(Some(&mut dist), info.rank as usize, info.world_size as usize, layout);
    let mut sum = Tensor::from_f32(&[info.rank as f32 + 1.0], &[1]).unwrap();
    dist.all_reduce_sum(&mut sum).unwrap();
    assert_eq!(sum.to_vec_f32().unwrap(), vec![3.0]);
    dist.barrier().unwrap();
    dist.shutdown().unwrap();
    let text: Vec<String> = losses.iter().map(|l| format!("{l:.17e}")).collect();
    std::fs::write(out, text.join("\n")).unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

// The tests below run on parallel threads, and a port free_port() found free is only free
// until someone binds it: one test's rendezvous store could take the port another had just
// picked (seen: EADDRINUSE). They take turns, holding this while they use a port.
static PORTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    PORTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn two_ranks_match_one_process() {
    two_ranks(Layout::DataParallel);
}

#[test]
fn two_ranks_with_fsdp_match_one_process() {
    two_ranks(Layout::Fsdp);
}

#[test]
fn two_ranks_with_tensor_parallelism_match_one_process() {
    two_ranks(Layout::TensorParallel);
}

fn two_ranks(layout: Layout) {
    if std::env::var("OLM_RUST_DIST_OUT").is_ok() {
        return;
    }
    let _turn = take_turn();
    let exe = std::env::current_exe().unwrap();
    let port = free_port().to_string();
    let dir = std::env::temp_dir().join(format!("olm-rust-dist-{}-{layout:?}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut children: Vec<_> = (0..2)
        .map(|r| {
            let mut cmd = Command::new(&exe);
            match layout {
                Layout::Fsdp => cmd.env("OLM_RUST_DIST_LAYOUT", "fsdp"),
                Layout::TensorParallel => cmd.env("OLM_RUST_DIST_LAYOUT", "tp"),
                Layout::DataParallel => &mut cmd,
            };
            cmd.args(["--exact", "dist_worker", "--nocapture", "--test-threads=1"])
                .env("OLM_RUST_DIST_OUT", dir.join(format!("rank{r}.txt")))
                .env("RANK", r.to_string())
                .env("WORLD_SIZE", "2")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .spawn()
                .unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    for c in children.iter_mut() {
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                assert!(status.success(), "a rank failed: {status}");
                break;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("a rank did not finish in time");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let reference = train(None, 0, 1, Layout::DataParallel);
    for r in 0..2 {
        let text = std::fs::read_to_string(dir.join(format!("rank{r}.txt"))).unwrap();
        let losses: Vec<f64> = text.lines().map(|l| l.parse().unwrap()).collect();
        assert_eq!(losses.len(), STEPS);
        // Same float32 terms summed in another order: 1e-5 relative.
        for (a, b) in losses.iter().zip(&reference) {
            assert!((a - b).abs() <= 1e-5 * b.abs(), "rank {r}: {a} vs one process {b}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_rank_is_named() {
    if std::env::var("OLM_RUST_DIST_OUT").is_ok() {
        return;
    }
    let _turn = take_turn();
    let opts = DistOptions::default().rank(0, 2).master("127.0.0.1", free_port() as i32).timeout_seconds(1.0);
    match Dist::new(&opts) {
        Ok(_) => panic!("a group with a missing rank must fail"),
        Err(e) => {
            assert_eq!(e.code, ErrorCode::Distributed, "{}", e.message);
            assert!(e.message.contains("rank 1 of world_size 2 never arrived"), "{}", e.message);
        }
    }
    match Dist::new(&DistOptions::default().rank(2, 2)) {
        Ok(_) => panic!("rank 2 of 2 must be refused"),
        Err(e) => assert_eq!(e.code, ErrorCode::InvalidArgument, "{}", e.message),
    }
}

/// Issue #12: rank ranges are checked before any rendezvous, naming the field.
#[test]
fn bad_options_are_named() {
    if std::env::var("OLM_RUST_DIST_OUT").is_ok() {
        return;
    }
    // Device strings ("gpu", "cuda:x") cannot be written in Rust (`Device` is an enum); the C
    // and Go suites check their refusal.
    match Dist::new(&DistOptions::default().rank(0, (1 << 20) + 1)) {
        Ok(_) => panic!("a world of 2^20 + 1 ranks must be refused"),
        Err(e) => {
            assert_eq!(e.code, ErrorCode::InvalidArgument, "{}", e.message);
            assert!(e.message.contains("options.world_size"), "{}", e.message);
        }
    }
}
