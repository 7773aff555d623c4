use super::*;

#[test]
fn last_obj() {
    let v = last_object("noise\n{\"ns_per_call\": 812.5}\n\n").unwrap();
    assert_eq!(num_field(&v, "ns_per_call").unwrap(), 812.5);
    assert!(last_object("nothing").is_none());
    // The last object wins; a trailing non-object JSON line is skipped.
    let v = last_object("{\"a\":1}\n{\"a\":2}\n[3]\n42\n").unwrap();
    assert_eq!(v, json!({"a": 2}));
}

#[test]
fn number_series_from_json() {
    assert_eq!(
        super::numbers(&serde_json::json!([1, 2.5, "x", null])),
        [1.0, 2.5]
    );
    assert!(super::numbers(&serde_json::json!({"a": 1})).is_empty());
}

#[test]
fn a_p99_needs_a_hundred_samples_else_it_is_a_max() {
    let eight = [5.0, 1.0, 9.0, 3.0, 2.0, 8.0, 4.0, 7.0];
    assert_eq!(upper_tail(&eight), Some(("max_of_8".to_string(), 9.0)));
    let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(upper_tail(&hundred), Some(("p99".to_string(), 99.0)));
    assert_eq!(upper_tail(&[]), None);
}

#[test]
fn a_script_that_failed_or_lost_a_client_is_no_measurement() {
    let lines = |text: &str| text.lines().map(str::to_string).collect::<Vec<_>>();
    let both = [
        json!({"client": "a", "x": 1}),
        json!({"client": "b", "x": 2}),
    ];
    let out = lines("EXPECT client a b\nRESULT ...\nRESULT ...");
    assert!(script_problems(Some(0), &out, &both).is_empty());
    // Exit status 1 after printing both: still not a measurement.
    assert_eq!(script_problems(Some(1), &out, &both), ["exited 1"]);
    assert_eq!(script_problems(None, &out, &both), ["timed out"]);
    // Client b failed midway: a RESULT for a only.
    assert_eq!(
        script_problems(Some(0), &out, &both[..1]),
        ["no RESULT for client b"]
    );
    assert_eq!(
        script_problems(Some(0), &lines("EXPECT mode m"), &[]),
        ["printed no RESULT line", "no RESULT for mode m"]
    );
    // No EXPECT line: any RESULT will do.
    assert!(script_problems(Some(0), &lines("RESULT {}"), &both[..1]).is_empty());
}

#[test]
fn percentiles_by_nearest_rank() {
    let v = [5.0, 1.0, 4.0, 2.0, 3.0];
    assert_eq!(percentile(&v, 50.0), Some(3.0));
    assert_eq!(percentile(&v, 80.0), Some(4.0));
    assert_eq!(percentile(&v, 99.0), Some(5.0));
    assert_eq!(percentile(&v, 0.0), Some(1.0));
    assert_eq!(percentile(&[], 50.0), None);
}

#[test]
fn numbers() {
    assert_eq!(num(200_000.0).to_string(), "200000");
    assert_eq!(num(812.5).to_string(), "812.5");
    assert_eq!(num(f64::NAN), Value::Null);
    assert_eq!(opt(None), Value::Null);
    assert_eq!(fmt_value(&num(3.0)), "3");
    assert_eq!(fmt_value(&num(1.23456)), "1.235");
    assert_eq!(fmt_value(&num(812.54)), "812.5");
    assert_eq!(fmt_value(&json!([1, 2.5])), "1, 2.5");
    assert_eq!(fmt_value(&json!("x")), "\"x\"");
    assert_eq!(fmt_value(&Value::Null), "null");
}

#[test]
fn a_filter_selects_by_substring_or_by_exact_name() {
    let picked = |filter: &str| -> Vec<&str> {
        ROWS.iter()
            .map(|(name, _)| *name)
            .filter(|name| row_selected(filter, name))
            .collect()
    };
    assert_eq!(picked("").len(), ROWS.len());
    assert_eq!(
        picked("clock_settime cost"),
        [
            "clock_settime cost",
            "clock_settime cost and journal latency (VM)"
        ]
    );
    assert_eq!(picked("=clock_settime cost"), ["clock_settime cost"]);
    assert!(picked("=clock_settime").is_empty());
}
