#[sata::kernel(d_k = 4, d_v = 4, terms = 3, scale = 0.0)]
pub struct Attention;

fn main() {
    let _ = Attention;
}
