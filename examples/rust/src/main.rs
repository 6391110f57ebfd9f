//! Builds a preset OLMo-2 model, runs a forward pass, a loss and greedy generation, and prints
//! the numbers.
use olm::{Config, Device, ForwardOptions, GenerateOptions, LossOptions, Model, ModelOptions, Tensor};

fn main() -> Result<(), olm::Error> {
    let config = Config::from_preset("olmo2_1M", 256)?;
    let (total, non_embedding) = config.num_params()?;
    let mut model = Model::new(&config, Device::Cpu, &ModelOptions::default())?;

    let tokens: Vec<i64> = "Hello, world".bytes().map(i64::from).collect();
    let ids = Tensor::from_i64(&tokens, &[1, tokens.len() as i64])?;
    let logits = model.forward(&ids)?;
    let last = model.forward_with(&ids, &ForwardOptions::default().logits_to_keep(1))?;

    // Next-token targets: the input shifted left, the last position ignored.
    let mut targets: Vec<i64> = tokens[1..].to_vec();
    targets.push(-100);
    let labels = Tensor::from_i64(&targets, &[1, targets.len() as i64])?;
    let loss = model.loss(&ids, &labels, &LossOptions::default().z_loss_multiplier(1e-4))?;

    println!("olm {}: olmo2_1M with {total} parameters ({non_embedding} non-embedding)", olm::version());
    println!("logits {:?}, first {:.6}", logits.shape()?, logits.to_vec_f32()?[0]);
    println!("loss {:.6} = ce {:.6} + z {:.6}", loss.loss_value, loss.ce_loss_value, loss.z_loss_value);

    // Greedy continuation of the prompt (the weights are untrained: expect noise).
    let prompt = Tensor::from_i64(&tokens, &[tokens.len() as i64])?;
    let generated = model.generate(&prompt, &GenerateOptions::default().max_new_tokens(8).temperature(0.0), None)?;
    println!("last-position logits {:?}; generated {generated:?}", last.shape()?);
    Ok(())
}
