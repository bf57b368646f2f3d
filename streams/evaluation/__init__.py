"""Detection quality: recall, time to detect and false alerts of the replay pipeline on
labelled synthetic traffic (`meterguard evaluate`)."""
