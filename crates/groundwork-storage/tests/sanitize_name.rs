//! User-supplied file names become safe display names.

use groundwork_storage::{MAX_NAME_BYTES, sanitize_name};

#[test]
fn path_components_are_dropped() {
    assert_eq!(sanitize_name("../../etc/passwd"), "passwd");
    assert_eq!(sanitize_name("a\\b"), "b");
    assert_eq!(sanitize_name("C:\\Windows\\system32\\cmd.exe"), "cmd.exe");
    assert_eq!(sanitize_name("/abs/path/"), "path");
    assert_eq!(sanitize_name("dir/ name.txt "), "name.txt");
}

#[test]
fn empty_and_dot_names_fall_back() {
    for name in [
        "",
        " ",
        "..",
        ".",
        "/",
        "\\",
        "../..",
        "a/..",
        "\u{0}\u{1f}",
        " . ",
    ] {
        assert_eq!(sanitize_name(name), "file", "{name:?}");
    }
}

#[test]
fn control_and_bidi_characters_are_dropped() {
    assert_eq!(sanitize_name("re\u{0}port\n.pdf\r"), "report.pdf");
    assert_eq!(sanitize_name("tab\there\u{7f}"), "tabhere");
    assert_eq!(sanitize_name("invoice\u{202E}fdp.exe"), "invoicefdp.exe");
    assert_eq!(sanitize_name("a/\u{1b}[31mred"), "[31mred");
}

#[test]
fn unicode_is_kept() {
    assert_eq!(sanitize_name("résumé 2024.pdf"), "résumé 2024.pdf");
    assert_eq!(
        sanitize_name("日本語のファイル.txt"),
        "日本語のファイル.txt"
    );
    assert_eq!(sanitize_name("emoji 🎉.png"), "emoji 🎉.png");
}

#[test]
fn long_names_are_cut_on_a_char_boundary() {
    let ascii = "a".repeat(300);
    assert_eq!(sanitize_name(&ascii), "a".repeat(MAX_NAME_BYTES));

    // 3-byte characters after one ASCII byte: byte 255 falls inside a character.
    let wide = format!("x{}", "€".repeat(100));
    let cut = sanitize_name(&wide);
    assert_eq!(cut.len(), 1 + 84 * 3);
    assert!(cut.starts_with('x') && cut.ends_with('€'));

    let emoji = "🎉".repeat(100);
    let cut = sanitize_name(&emoji);
    assert_eq!(cut.len(), 252);
    assert!(cut.chars().all(|c| c == '🎉'));

    // A cut that ends in white space is trimmed, never empty.
    let spaced = format!("{}   {}", "b".repeat(253), "c".repeat(10));
    assert_eq!(sanitize_name(&spaced), "b".repeat(253));
}

#[test]
fn results_never_contain_separators() {
    for name in ["a/b\\c", "..\\..\\x", "x/", "\\\\server\\share\\f"] {
        let clean = sanitize_name(name);
        assert!(!clean.contains(['/', '\\']), "{name:?} -> {clean:?}");
        assert!(!clean.is_empty());
    }
}
