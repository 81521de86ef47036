//! YAML sources: files and directories of multi-document YAML into the model.
