#[sata::kernel(d_k = "16", d_v = 4.5, terms = 3)]
pub struct Attention;

fn main() {
    let _ = Attention;
}
