"""TFDS builder for PersonaChat in the ParlAI text format (``persona_chat``)."""
from vedgan.data.persona_chat.persona_chat import PersonaChat

__all__ = ["PersonaChat"]
