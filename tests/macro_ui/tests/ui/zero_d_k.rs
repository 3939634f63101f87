#[sata::kernel(d_k = 0, d_v = 4, terms = 3)]
pub struct Attention;

fn main() {
    let _ = Attention;
}
