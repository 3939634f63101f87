#[sata::kernel(d_k = 4, d_v = 4)]
pub struct Attention;

fn main() {
    let _ = Attention;
}
