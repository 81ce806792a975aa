import tfllm
