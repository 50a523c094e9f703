use pitgun_workload::*;
#[test]
fn probe() {
    let cfg = SimConfig::new(16, 600_000_000, 42);
    let mut by = std::collections::BTreeMap::new();
    let mut kinds = std::collections::BTreeMap::new();
    let truth = simulate(&cfg, |r| {
        if let Record::Envelope(e) = &r {
            *kinds.entry(e.kind.as_str()).or_insert(0) += 1;
            if e.kind.as_str() == "sample" { let x = by.entry(e.source.version.clone()).or_insert((0usize,0usize)); x.0 += 1; x.1 += r.to_json_line().len(); }
            if e.kind.as_str() != "sample" && e.kind.as_str() != "health" && e.kind.as_str() != "sector" { println!("{} {} {} {:?}", e.session_id, e.seq, e.kind.as_str(), e.channels); }
            if e.kind.as_str() == "sample" && e.seq % 3000 < 18 && e.session_id == "s-42-2" { println!("{:?}", e.channels); }
        }
    });
    for (k, v) in &by { println!("{k}: {} samples mean {}", v.0, v.1 as f64 / v.0 as f64); }
    println!("kinds {kinds:?}");
    for s in &truth.sessions { println!("{s:?}"); }
}
