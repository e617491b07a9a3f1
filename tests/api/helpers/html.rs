//! Reading latchkey's HTML pages as a test reads them: the value of a
//! hidden field, the text of an element found by its id.

/// The `value` of the form field named `name`, if the page has one.
pub fn field_value(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(unescape(&html[start..end]))
}

/// The text inside the element with `id`, up to its first child tag.
pub fn element_text(html: &str, id: &str) -> Option<String> {
    let marker = format!("id=\"{id}\"");
    let tag_end = html.find(&marker)? + marker.len();
    let start = html[tag_end..].find('>')? + tag_end + 1;
    let end = html[start..].find('<')? + start;
    Some(unescape(&html[start..end]))
}

/// The items of the list with `id`.
pub fn list_items(html: &str, id: &str) -> Vec<String> {
    let marker = format!("id=\"{id}\">");
    let Some(start) = html.find(&marker).map(|i| i + marker.len()) else {
        return Vec::new();
    };
    let end = html[start..]
        .find("</ul>")
        .map_or(html.len(), |i| i + start);
    html[start..end]
        .split("<li>")
        .filter_map(|item| item.split("</li>").next())
        .filter(|item| !item.is_empty())
        .map(unescape)
        .collect()
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}
