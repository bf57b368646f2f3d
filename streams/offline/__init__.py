"""The pipeline off the live stream: replay a file or a topic range, and reconcile the live
namespace with totals recomputed from the raw events."""
