import Foundation
import Units

/// The page of one image's rollout (`/stats/INFOHASH`), rendered from a `RolloutView`: the figures an
/// admin watches while nodes fetch an image, and the nodes that hold it up.
enum RolloutPage {
    static func html(_ view: RolloutView) -> String {
        let percent = view.fractionDone.map { String(format: "%.1f %%", $0 * 100) } ?? "?"
        let width = view.fractionDone.map { String(format: "%.1f", $0 * 100) } ?? "0"
        let rows = view.slowest.map { node in
            "<tr><td><code>\(escape(node.address))</code></td><td>\(node.bytesLeft.map(bytes) ?? "?")</td>"
                + "<td>\(bytes(Int64(node.bytesPerSecond)))/s</td><td>\(node.etaSeconds.map(duration) ?? (node.waiting ? "no report yet" : "stalled"))</td>"
                + "<td>\(duration(node.lastAnnounceSecondsAgo)) ago</td></tr>"
        }.joined(separator: "\n")
        return """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
            <title>rollout \(view.infoHash.prefix(12)) · vmswarm tracker</title>
            <style>
            body{font-family:system-ui,sans-serif;margin:2em;color:#222}
            .cards{display:flex;gap:1em;flex-wrap:wrap}
            .card{border:1px solid #ccc;border-radius:8px;padding:1em 1.5em;min-width:8em}
            .card b{display:block;font-size:2em}
            .bar{height:1.2em;background:#eee;border-radius:4px;margin:1.5em 0;max-width:48em}
            .bar div{height:100%;background:#2a7;border-radius:4px}
            table{border-collapse:collapse;margin-top:1em}td,th{border-bottom:1px solid #ddd;padding:.3em .8em;text-align:right}
            td:first-child,th:first-child{text-align:left}
            </style></head><body>
            <h1>Rollout of <code>\(view.infoHash)</code></h1>
            <p><a href="/stats">all torrents</a> &middot; refreshes every 5 s &middot; <a href="/stats/\(view.infoHash)?format=json">JSON</a>
            &middot; image \(view.imageBytes.map(bytes) ?? "size not known yet")</p>
            <div class="cards">
            <div class="card" id="done"><b>\(view.done)</b>nodes done</div>
            <div class="card" id="in-progress"><b>\(view.inProgress)</b>in progress</div>
            <div class="card" id="percent"><b>\(percent)</b>of all bytes</div>
            <div class="card" id="rate"><b>\(bytes(Int64(view.bytesPerSecond)))/s</b>together</div>
            <div class="card" id="eta"><b>\(eta(view))</b>until the last node</div>
            <div class="card" id="completed"><b>\(view.completed)</b>completed here</div>
            <div class="card" id="completion-rate"><b>\(view.completionsPerSecond.map { String(format: "%.1f", $0 * 60) } ?? "–")</b>nodes done a minute</div>
            </div>
            <div class="bar"><div style="width:\(width)%"></div></div>
            <h2>Nodes that will finish last</h2>
            <table><thead><tr><th>node</th><th>left</th><th>rate</th><th>ETA</th><th>last announce</th></tr></thead>
            <tbody>
            \(rows.isEmpty ? "<tr><td colspan=\"5\">every node is done</td></tr>" : rows)
            </tbody></table>
            <p>From the nodes' announces: rates are how fast each one's <code>left</code> fell between its last two.
            A node that announced once has no rate yet (\(view.waiting) now); until it announces again the
            ETA counts it at the rate nodes have been completing.</p>
            </body></html>
            """
    }

    static func eta(_ view: RolloutView) -> String {
        if view.inProgress == 0 { return "done" }
        if let seconds = view.etaSeconds { return duration(seconds) }
        return view.stalled > 0 ? "stalled" : "waiting for reports"
    }

    static func bytes(_ count: Int64) -> String { Format.bytes(max(0, count)) }

    static func duration(_ seconds: Double) -> String { seconds < 1e9 ? Format.duration(seconds) : "∞" }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}
