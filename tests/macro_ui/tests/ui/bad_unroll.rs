#[sata::kernel(d_k = 4, d_v = 4, terms = 3, unroll = "sideways")]
pub struct BadUnroll;

fn main() {}
