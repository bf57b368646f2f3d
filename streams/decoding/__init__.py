"""Raw message bytes -> MeteringEvents or dead letters: format detection, the input formats
(formats/), validation and kcat dump envelopes. Pure: no Kafka, Redis or clock."""
