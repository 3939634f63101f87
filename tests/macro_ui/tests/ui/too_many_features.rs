#[sata::kernel(d_k = 64, d_v = 64, terms = 6)]
pub struct Attention;

fn main() {
    let _ = Attention;
}
