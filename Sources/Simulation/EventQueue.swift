/// Pending events in virtual time: a binary min-heap ordered by time, then by the order they were
/// scheduled, so events due at the same instant run first-in first-out and a run is deterministic.
struct EventQueue<Event> {
    private struct Entry {
        var time: Double
        var sequence: UInt64
        var event: Event

        func precedes(_ other: Entry) -> Bool {
            time < other.time || (time == other.time && sequence < other.sequence)
        }
    }

    private var heap: [Entry] = []
    private var scheduled: UInt64 = 0

    var isEmpty: Bool { heap.isEmpty }
    var count: Int { heap.count }
    var nextTime: Double? { heap.first?.time }

    mutating func schedule(_ event: Event, at time: Double) {
        heap.append(Entry(time: time, sequence: scheduled, event: event))
        scheduled &+= 1
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].precedes(heap[parent]) else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> (time: Double, event: Event)? {
        guard let first = heap.first else { return nil }
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            var parent = 0
            while true {
                let left = 2 * parent + 1
                guard left < heap.count else { break }
                var smallest = left
                if left + 1 < heap.count, heap[left + 1].precedes(heap[left]) { smallest = left + 1 }
                guard heap[smallest].precedes(heap[parent]) else { break }
                heap.swapAt(smallest, parent)
                parent = smallest
            }
        }
        return (first.time, first.event)
    }
}
