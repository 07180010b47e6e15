"""Pure ``nn.Module`` building blocks: backbone, channel attention, LSTM decoder, nets."""
