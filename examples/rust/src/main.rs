//! Builds a preset OLMo-2 model, runs a forward pass and a loss, and prints the numbers.
use olm::{Config, LossOptions, Model, ModelOptions, Tensor};

fn main() -> Result<(), olm::Error> {
    let config = Config::from_preset("olmo2_1M", 256)?;
    let (total, non_embedding) = config.num_params()?;
    let model = Model::new(&config, "cpu", &ModelOptions::default())?;

    let tokens: Vec<i64> = "Hello, world".bytes().map(i64::from).collect();
    let ids = Tensor::from_i64(&tokens, &[1, tokens.len() as i64])?;
    let logits = model.forward(&ids, 0)?;

    // Next-token targets: the input shifted left, the last position ignored.
    let mut targets: Vec<i64> = tokens[1..].to_vec();
    targets.push(-100);
    let labels = Tensor::from_i64(&targets, &[1, targets.len() as i64])?;
    let loss = model.loss(&ids, &labels, &LossOptions::default().z_loss_multiplier(1e-4))?;

    println!("olm {}: olmo2_1M with {total} parameters ({non_embedding} non-embedding)", olm::version());
    println!("logits {:?}, first {:.6}", logits.shape()?, logits.to_vec_f32()?[0]);
    println!("loss {:.6} = ce {:.6} + z {:.6}", loss.loss_value, loss.ce_loss_value, loss.z_loss_value);
    Ok(())
}
