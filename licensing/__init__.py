"""The owner's domain: data resources and grades, franchise licences, listing review, privacy checks."""
