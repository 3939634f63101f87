#[sata::kernel(d_k = 4, d_v = 4, taylor_terms = 3)]
pub struct Attention;

fn main() {
    let _ = Attention;
}
