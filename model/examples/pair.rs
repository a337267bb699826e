//! Prints one pair's verdicts and shortest stories: `cargo run -p cachelock-model --example pair -- POLICY SCENARIO`.
use cachelock_model::check::*;
use cachelock_model::{Policy, Scenario};
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (Ok(p), Ok(s)) = (Policy::parse(&a[1]), Scenario::parse(&a[2])) else {
        return;
    };
    let r = check_pair(p, &s);
    let props: Vec<Property> = r.verdicts.iter().map(|(p, _)| *p).collect();
    for (p, v) in &r.verdicts {
        println!("{p:22} {}", v.name());
    }
    for t in shortest_traces(p, &s, &props) {
        println!("--- {}", t.property);
        for l in t.story {
            println!("{l}");
        }
    }
}
