//! The enrollment page's QR code, drawn as inline SVG: no image request,
//! nothing the page's `Content-Security-Policy` has to allow.

use qrcodegen::{QrCode, QrCodeEcc};

/// Modules of light margin around the code (the QR standard's quiet zone).
const QUIET_ZONE: i32 = 4;

/// `text` as an SVG QR code, or `None` when it is too long for one.
pub fn svg(text: &str, label: &str) -> Option<String> {
    let code = QrCode::encode_text(text, QrCodeEcc::Medium).ok()?;
    let size = code.size();
    let mut path = String::with_capacity((size * size * 4) as usize);
    for y in 0..size {
        for x in 0..size {
            if code.get_module(x, y) {
                path.push_str(&format!("M{},{}h1v1h-1z", x + QUIET_ZONE, y + QUIET_ZONE));
            }
        }
    }
    let full = size + 2 * QUIET_ZONE;
    Some(format!(
        "<svg class=\"qr\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {full} {full}\" \
         shape-rendering=\"crispEdges\" role=\"img\" aria-label=\"{label}\">\
         <rect width=\"{full}\" height=\"{full}\" fill=\"#fff\"/>\
         <path d=\"{path}\" fill=\"#000\"/></svg>",
        label = super::page::escape(label),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uri_becomes_an_svg_with_dark_modules_and_a_quiet_zone() {
        let svg = svg("otpauth://totp/latchkey:alice?secret=AAAA", "QR").unwrap();
        assert!(svg.starts_with("<svg class=\"qr\""));
        // A version-3 code (29 modules) plus 4 on each side.
        assert!(svg.contains("viewBox=\"0 0 37 37\""), "{svg}");
        // The top-left finder pattern starts at the quiet zone's edge.
        assert!(svg.contains("M4,4h1v1h-1z"));
        assert!(!svg.contains("M0,0"));
    }

    #[test]
    fn text_too_long_for_any_code_is_refused() {
        assert_eq!(svg(&"x".repeat(5000), "QR"), None);
    }
}
