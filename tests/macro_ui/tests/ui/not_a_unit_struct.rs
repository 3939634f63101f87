#[sata::kernel(d_k = 4, d_v = 4, terms = 3)]
pub struct Attention {
    pub heads: usize,
}

fn main() {
    let _ = Attention { heads: 1 };
}
